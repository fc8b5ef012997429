"""`edgeprof calibrate`: this host's ceilings, kept as a local profile the predictor uses first.

The raw roofs (triad bandwidth, BLAS and GPU matmul rates) come from `hardware/calibrate.py`; the effective
costs are fitted (`analysis/fit.py`) from short real llama.cpp runs made through the runner: on the CPU
always, and on the GPU too where llama-cpp-python was built with GPU offload. It lives in analysis, above
the runner it drives, because what it produces is a fit; `ceilings.py` reads the stored profile back.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgeprof.analysis.fit import (LLAMA_CUDA_MATVEC_MAX_BATCH, TERMS, Shape, fit_costs, fitted_ceilings,
                                   predicted_times, shape_terms)
from edgeprof.analysis.roofline import Ceilings
from edgeprof.backends.llamacpp.lib import build_info
from edgeprof.bench.plan import expand
from edgeprof.bench.runner import Runner, RunOptions
from edgeprof.hardware.calibrate import gpu_ceilings, matmul_gflops, triad_bandwidth_gbps
from edgeprof.hardware.devices import HostFacts, calibration_path, host_facts
from edgeprof.models.presets import get_preset
from edgeprof.quant import GGUF_QUANTS
from edgeprof.results.records import read_records
from edgeprof.results.rundir import create_run_dir
from edgeprof.results.summary import summarize


LLAMA_QUANTS = ("q4_k_m", "q8_0", "f16")


@dataclass(frozen=True)
class CalibrationPlan:
    """Which real runs a fit needs. Each shape varies one quantity the others hold still: batch (matmul
    FLOPs per weight byte; on a GPU also mat-vec vs tiled kernels), prompt (attention), sampler (the host's
    argmax); and on a GPU two presets of different depth and width separate per-kernel cost from streaming."""

    kind: str  # "cpu" or "gpu": which terms are fitted (`fit.TERMS`)
    presets: tuple[str, ...]
    shapes: tuple[Shape, ...]


# Two widths on a CPU too: fitted on SmolLM2-135M alone, the additive decode model charged 1B-class models ~40 ms
# a step of "matmul compute" that their big mat-vecs hide under streaming (measured on a 2-core EPYC: decode
# within 25 % for 4 of 14 family rows; with Llama-3.2-1B beside it, 13 of 14; docs/benchmarks.md §16).
CPU_PLAN = CalibrationPlan("cpu", ("smollm2-135m", "llama-3.2-1b"),
                           (Shape(1, 64, 64), Shape(1, 512, 64), Shape(4, 64, 64)))
GPU_PLAN = CalibrationPlan("gpu", ("smollm2-135m", "llama-3.2-1b"), (
    Shape(1, 64, 64, "none"), Shape(1, 64, 64), Shape(1, 1024, 64, "none"), Shape(4, 64, 64, "none"),
    Shape(8, 64, 64, "none"), Shape(16, 64, 64, "none"), Shape(16, 64, 64), Shape(16, 256, 64, "none")))


def llama_effective_rates(threads: int, quants: tuple[str, ...] = LLAMA_QUANTS, plan: CalibrationPlan = CPU_PLAN,
                          gpu_layers: int = 0, repetitions: int = 3) -> dict:
    """Fit effective costs (`edgeprof.analysis.fit`) from short real llama.cpp runs, each in a worker process
    through the runner: every preset x shape x quant of `plan`, then per quant one fit of decode step time
    and one of TTFT. Also records each run's measured and fitted figures, so the fit's residuals show."""
    models = [f"synth:{preset}" for preset in plan.presets]
    configs = []
    for shape in plan.shapes:
        configs += expand(models, list(quants), ["llama.cpp"], {
            "batch": [shape.batch], "prompt_tokens": [shape.prompt], "gen_tokens": [shape.gen],
            "sampler": [shape.sampler], "threads": [threads], "gpu_layers": [gpu_layers]})
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = create_run_dir(Path(tmp))
        Runner(run_dir, {"profile": "calibration"}, RunOptions(repetitions=repetitions, warmup=1, fidelity=False)).run(configs)
        rows = summarize(read_records(run_dir.records_path))
    archs = {f"synth:{preset}": get_preset(preset).architecture for preset in plan.presets}
    matvec = LLAMA_CUDA_MATVEC_MAX_BATCH if plan.kind == "gpu" else 0
    rates: dict = {"presets": list(plan.presets), "threads": threads, "gpu_layers": gpu_layers}
    for quant in quants:
        q = GGUF_QUANTS[quant]
        runs = {(r["model"], r["batch"], r["prompt_tokens"], r["sampler"]): r for r in rows
                if r["quant"] == quant and r["status"] == "ok"}
        cases = [(model, shape) for model in models for shape in plan.shapes]
        missing = [f"{model} {shape.label}" for model, shape in cases
                   if (model, shape.batch, shape.prompt, shape.sampler) not in runs]
        if missing:
            rates[quant] = f"unavailable: calibration runs failed ({', '.join(missing[:3])})"
            continue
        samples: dict[str, list] = {"decode": [], "prefill": []}
        for model, shape in cases:
            run = runs[(model, shape.batch, shape.prompt, shape.sampler)]
            terms = shape_terms(archs[model], q, shape, matvec)
            samples["decode"].append((terms["decode"], shape.batch / run["decode_tps_mean"]))
            samples["prefill"].append((terms["prefill"], run["ttft_ms_mean"] / 1e3))
        fit = {phase: fit_costs(samples[phase], TERMS[plan.kind][phase]) for phase in ("decode", "prefill")}
        fit["matvec_max_batch"] = matvec
        # unbounded base roofs: the fit's own prediction, so `measured` shows its residuals
        ceilings = fitted_ceilings(fit, Ceilings(math.inf, math.inf, 0.0, "fit"), "fit")
        measured = {}
        for model, shape in cases:
            run = runs[(model, shape.batch, shape.prompt, shape.sampler)]
            ttft, step = predicted_times(archs[model], q, ceilings, shape)
            measured[f"{model.removeprefix('synth:')}_{shape.label}"] = {
                "decode_tps": run["decode_tps_mean"], "ttft_ms": run["ttft_ms_mean"],
                "decode_tps_fit": shape.batch / step, "ttft_ms_fit": ttft * 1e3}
        rates[quant] = {**fit, "measured": measured}
    return rates


def _llama_has_gpu() -> bool:
    """Whether this llama-cpp-python build can offload to a GPU (a CPU-only wheel cannot fit the GPU terms)."""
    try:
        return build_info()["gpu_offload"]
    except Exception:  # noqa: BLE001 - no usable llama.cpp: no GPU fit, said by its absence
        return False


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
        if with_gpu and result.get("gpu_bandwidth_gbps") and _llama_has_gpu():
            result["llama_cpp_gpu"] = llama_effective_rates(threads, plan=GPU_PLAN, gpu_layers=-1)
    path = calibration_path(profile_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    result["path"] = str(path)
    return result
