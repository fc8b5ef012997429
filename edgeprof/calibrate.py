"""Measure this host's achievable ceilings and keep them as a local profile for the predictor.

- memory bandwidth: a STREAM-like triad (a = b + s*c) split across threads (numpy releases the GIL for
  large array operations), best of several trials, bytes counted as the arrays actually read and written;
- fp32 matrix multiply: numpy/BLAS on 2048x2048 operands, best of several;
- int8 matrix multiply: numpy has no int8 GEMM, so it is reported unavailable rather than estimated;
- on a host with a CUDA GPU and torch, the GPU's copy bandwidth and bf16/fp32 matmul rates too.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from edgeprof.catalog import user_config_root
from edgeprof.devices import HostFacts, host_facts


def calibration_path(profile_name: str) -> Path:
    return user_config_root() / "calibration" / f"{profile_name}.json"


def load_calibration(profile_name: str) -> dict | None:
    try:
        return json.loads(calibration_path(profile_name).read_text())
    except (OSError, ValueError):
        return None


def triad_bandwidth_gbps(threads: int, elements: int = 1 << 25, trials: int = 5) -> float:
    """Best triad bandwidth over `trials`, in GB/s (per thread: tmp = s*c; a = b + tmp -> 5 array passes)."""
    a, b, c = (np.ones(elements, dtype=np.float32) for _ in range(3))
    tmp = np.empty_like(a)
    bounds = np.linspace(0, elements, threads + 1, dtype=np.int64)

    def work(i: int) -> None:
        lo, hi = bounds[i], bounds[i + 1]
        np.multiply(c[lo:hi], np.float32(3.0), out=tmp[lo:hi])
        np.add(b[lo:hi], tmp[lo:hi], out=a[lo:hi])

    best = 0.0
    for _ in range(trials):
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        best = max(best, 5 * elements * 4 / elapsed / 1e9)
    return best


def matmul_gflops(n: int = 2048, trials: int = 3) -> float:
    x = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    best = 0.0
    for _ in range(trials):
        start = time.perf_counter()
        np.matmul(x, x)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def gpu_ceilings() -> dict:
    try:
        import torch
    except ImportError:
        return {"gpu": "unavailable: torch is not installed"}
    if not torch.cuda.is_available():
        return {"gpu": "unavailable: no CUDA device"}
    size = 1 << 28  # 1 GiB of bytes
    src = torch.empty(size, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    torch.cuda.synchronize()
    bandwidth = 2 * size * 10 / (time.perf_counter() - start) / 1e9
    rates = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        m = torch.randn(8192, 8192, device="cuda", dtype=dtype)
        m @ m
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            m @ m
        torch.cuda.synchronize()
        rates[name] = 2 * 8192**3 * 5 / (time.perf_counter() - start) / 1e12
    return {"gpu": torch.cuda.get_device_name(0), "gpu_bandwidth_gbps": bandwidth, "gpu_tflops": rates}


LLAMA_QUANTS = ("q4_k_m", "q8_0", "f16")
LLAMA_PRESET = "smollm2-135m"
_SHORT, _LONG, _GEN, _BATCH = 64, 512, 64, 4


def llama_effective_rates(threads: int, quants: tuple[str, ...] = LLAMA_QUANTS, preset: str = LLAMA_PRESET,
                          gpu_layers: int = 0) -> dict:
    """Fit effective rates from short real llama.cpp runs (each in a worker process, via the runner).

    Per quantization, three runs (batch 1 at prompt 64 and 512, batch 4 at prompt 64; 64 decode steps)
    fit decode as weight bytes / bandwidth + weight FLOPs / decode matmul rate + attention FLOPs / decode
    attention rate (three equations, three unknowns), and prefill as weight FLOPs / matmul rate +
    attention FLOPs / prefill attention rate (from the two batch-1 prompts).
    """
    import tempfile

    from edgeprof.analysis.roofline import category_totals, phase_ops
    from edgeprof.bench.plan import expand
    from edgeprof.bench.runner import Runner, RunOptions
    from edgeprof.quant import GGUF_QUANTS
    from edgeprof.results.records import read_records
    from edgeprof.results.rundir import create_run_dir
    from edgeprof.results.summary import summarize

    common = {"gen_tokens": [_GEN], "threads": [threads], "gpu_layers": [gpu_layers]}
    configs = expand([f"synth:{preset}"], list(quants), ["llama.cpp"],
                     {"batch": [1], "prompt_tokens": [_SHORT, _LONG], **common})
    configs += expand([f"synth:{preset}"], list(quants), ["llama.cpp"], {"batch": [_BATCH], "prompt_tokens": [_SHORT],
                                                                       **common})
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = create_run_dir(Path(tmp))
        Runner(run_dir, {"profile": "calibration"}, RunOptions(repetitions=3, warmup=1)).run(configs)
        rows = summarize(read_records(run_dir.records_path))
    arch = configs[0].source.architecture
    weights, attention = ("projections", "ffn", "lm_head"), ("attention",)
    rates: dict = {"preset": preset, "threads": threads}
    for quant in quants:
        runs = {(r["batch"], r["prompt_tokens"]): r for r in rows if r["quant"] == quant and r["status"] == "ok"}
        shapes = [(1, _SHORT), (1, _LONG), (_BATCH, _SHORT)]
        if set(runs) != set(shapes):
            rates[quant] = "unavailable: calibration runs failed"
            continue
        by_prompt = {p: runs[(1, p)] for p in (_SHORT, _LONG)}
        q = GGUF_QUANTS[quant]
        prompts = (_SHORT, _LONG)
        # decode step = weight bytes / bandwidth + weight FLOPs / decode matmul rate + attention FLOPs / rate
        decode = [phase_ops(arch, q, b, 1, p + _GEN // 2) for b, p in shapes]
        inv_bw, inv_decode_matmul, inv_attn_decode = _solve3(
            [[category_totals(ops, weights)[1], category_totals(ops, weights)[0], category_totals(ops, attention)[0]]
             for ops in decode],
            [runs[shape]["batch"] / runs[shape]["decode_tps_mean"] for shape in shapes])
        # prefill(P) = weight-matmul FLOPs(P) / matmul rate + attention FLOPs(P) / prefill attention rate
        prefill = [phase_ops(arch, q, 1, p, p) for p in prompts]
        inv_matmul, inv_attn_prefill = _solve2(
            [[category_totals(ops, weights)[0], category_totals(ops, attention)[0]] for ops in prefill],
            [by_prompt[p]["ttft_ms_mean"] / 1e3 for p in prompts])
        rates[quant] = {"weight_gbps": 1 / inv_bw / 1e9, "matmul_tflops": 1 / inv_matmul / 1e12,
                        "decode_matmul_tflops": _rate(inv_decode_matmul) / 1e12,
                        "decode_attention_tflops": _rate(inv_attn_decode) / 1e12,
                        "prefill_attention_tflops": _rate(inv_attn_prefill) / 1e12,
                        "measured": {f"b{b}_p{p}": {"decode_tps": runs[(b, p)]["decode_tps_mean"],
                                                     "ttft_ms": runs[(b, p)]["ttft_ms_mean"]} for b, p in shapes}}
    return rates


def _solve2(rows: list[list[float]], times: list[float]) -> tuple[float, float]:
    """Seconds per unit of (first, second) quantity from two runs; a non-positive second term (noise
    when the second quantity barely differs) is dropped and the first refitted alone."""
    first, second = np.linalg.solve(np.asarray(rows, dtype=np.float64), np.asarray(times, dtype=np.float64))
    if second <= 0 or first <= 0:
        return times[0] / rows[0][0], 0.0
    return float(first), float(second)


def _solve3(rows: list[list[float]], times: list[float]) -> tuple[float, float, float]:
    """Seconds per (weight byte, weight FLOP, attention FLOP) from three decode runs. Noise can make a
    term non-positive; then that term is dropped and the others refitted by least squares."""
    a, t = np.asarray(rows, dtype=np.float64), np.asarray(times, dtype=np.float64)
    keep = [0, 1, 2]
    while True:
        solution = np.linalg.lstsq(a[:, keep], t, rcond=None)[0]
        if (solution > 0).all() or len(keep) == 1:
            result = [0.0, 0.0, 0.0]
            for index, value in zip(keep, solution):
                result[index] = max(float(value), 0.0)
            return result[0], result[1], result[2]
        keep = [k for k, v in zip(keep, solution) if v > 0] or [0]


def _rate(seconds_per_unit: float) -> float:
    return 1 / seconds_per_unit if seconds_per_unit > 0 else float("inf")


def calibrate(profile_name: str, threads: int | None = None, facts: HostFacts | None = None,
              with_gpu: bool = True, with_llama: bool = True) -> dict:
    facts = facts or host_facts()
    threads = threads or facts.physical_cores
    result = {
        "profile": profile_name, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": facts.to_dict(),
        "threads": threads,
        "memory_bandwidth_gbps": triad_bandwidth_gbps(threads),
        "cpu_tflops_fp32": matmul_gflops() / 1e3,
        "cpu_int8": "unavailable: numpy has no int8 matrix multiply",
    }
    if with_gpu:
        result.update(gpu_ceilings())
    if with_llama:
        result["llama_cpp_cpu"] = llama_effective_rates(threads)
    path = calibration_path(profile_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    result["path"] = str(path)
    return result
