"""Validate llama.cpp's measured operator shares (`edgeprof run --profile-ops`), issue 13's checks 1 and 3.

For each batch x prompt, profiles one GGUF with `llamacpp_profile.profile_ops` and records per phase the
category shares, the reconstructed step (sum of corrected category times) against the plain step
(coverage; target 0.9-1.1), the dilation of the observed step, and the calibrated per-window overhead.

    # 1 + 3 on a CPU host: llama.cpp f32 beside ONNX Runtime fp32 on the same model and workload
    python scripts/validate_op_profile.py --model synth:smollm2-135m --quant f32 --ort fp32 \
        --batches 1 --prompts 128,1024 --threads 2 --repeats 3 --naive --out results/operators/cpu-host/cpu_smollm2-135m_f32.json
    # on the GPU (CUPTI where cupti-python is installed; check 2 is scripts/gpu/ncu_decode_shares.py)
    python scripts/validate_op_profile.py --model synth:llama-3.2-1b --quant q4_k_m --gpu-layers -1 \
        --batches 1,16 --prompts 128,2048 --threads 16 --out op_profile_gpu.json

--naive also observes every node on its own (the method the grouped windows replace) at batch 1 and the
first prompt, to record the dilation and distortion it causes.
--ort compares decode shares per category with ONNX Runtime's profiler (fp32 export) on the same workload:
the target is agreement within 5 percentage points, or a difference explained by what each runtime fuses.
--repeats N profiles each side N times, interleaved, and compares the medians (ONNX Runtime's lm_head
share moved from 17 % to 13 % between two single runs on this shared host).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import llama_cpp  # noqa: F401  - before numpy; see edgeprof.backends.llamacpp.lib.load_llama_cpp

from edgeprof.backends.llamacpp import profile as llamacpp_profile  # noqa: E402
from edgeprof.backends.op_categories import OP_CATEGORIES  # noqa: E402
from edgeprof.bench.measure import make_prompts  # noqa: E402
from edgeprof.config import Hyperparameters  # noqa: E402
from edgeprof.export.gguf_export import export_gguf  # noqa: E402
from edgeprof.results.rundir import library_versions  # noqa: E402
from edgeprof.models.source import resolve  # noqa: E402

COVERAGE_TARGET = (0.9, 1.1)
AGREEMENT_POINTS = 5.0


def profile(path: str, hp: Hyperparameters, n_vocab: int, on_gpu: bool) -> dict:
    prompts = make_prompts(hp, n_vocab, 0)
    if not on_gpu:
        return llamacpp_profile.profile_ops(path, hp, prompts).to_dict()
    from edgeprof.backends.llamacpp.cuda_kernels import kernel_timer

    with kernel_timer() as timer:
        result = llamacpp_profile.profile_ops(path, hp, prompts, kernel_timer=timer).to_dict()
    result["kernel_timer"] = "cupti" if timer is not None else "none (wall windows)"
    return result


def naive_dilation(path: str, hp: Hyperparameters, n_vocab: int) -> dict:
    """Every node observed on its own: the grouped method's starting point (issue 13 measured 2.2x)."""
    result = llamacpp_profile.profile_ops(path, hp, make_prompts(hp, n_vocab, 0),
                                          planner=llamacpp_profile.plan_every_node).to_dict()
    decode = result["decode"]
    return {"decode_dilation": decode["dilation"], "decode_coverage": decode["coverage"],
            "decode_share": decode["share"], "windows": decode["windows"],
            "overhead_us_per_window": result["overhead_us_per_window"]}


def median_shares(profiles: list[dict], phase: str) -> dict[str, float]:
    """Per category, the median share over repeated profiles (this shared host drifts between minutes)."""
    import statistics

    return {c: statistics.median(p[phase]["share"].get(c, 0.0) for p in profiles) for c in OP_CATEGORIES}


def ort_shares(source, quant: str, hp: Hyperparameters) -> dict:
    from edgeprof.backends.onnxruntime.profile import profile_ops
    from edgeprof.export.onnx_export import export_onnx

    artifact = export_onnx(source, quant)
    ort_hp = replace(hp, sampler="none", kv_type=None, gpu_layers=None, n_batch=None, n_ubatch=None,
                     flash_attn=None)
    from edgeprof.backends.onnxruntime.session import OnnxRuntimeSession

    session = OnnxRuntimeSession(str(artifact.path), ort_hp)
    n_vocab = session.n_vocab
    session.close()
    return profile_ops(str(artifact.path), ort_hp, make_prompts(ort_hp, n_vocab, 0)).to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="synth:smollm2-135m")
    parser.add_argument("--quant", default="f32")
    parser.add_argument("--batches", default="1")
    parser.add_argument("--prompts", default="128,1024")
    parser.add_argument("--gen", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--flash-attn", default="auto")
    parser.add_argument("--kv-type", default="f16")
    parser.add_argument("--ort", help="also profile ONNX Runtime at this quantization (e.g. fp32) and compare")
    parser.add_argument("--repeats", type=int, default=1, help="profiles per side, interleaved; medians compared")
    parser.add_argument("--naive", action="store_true", help="also observe every node (first prompt, batch 1)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    source = resolve(args.model)
    artifact = export_gguf(source, args.quant)
    from edgeprof.backends.llamacpp.session import LlamaCppModel

    weights = LlamaCppModel(str(artifact.path), 0)
    n_vocab = weights.n_vocab
    weights.free()
    on_gpu = args.gpu_layers != 0
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        for prompt in (int(p) for p in args.prompts.split(",")):
            hp = Hyperparameters(batch=batch, prompt_tokens=prompt, gen_tokens=args.gen, threads=args.threads,
                                 gpu_layers=args.gpu_layers, flash_attn=args.flash_attn, sampler="none",
                                 kv_type=args.kv_type)
            started = time.time()
            results, orts = [], []
            for _ in range(args.repeats):  # interleaved: llama.cpp, ONNX Runtime, llama.cpp, ...
                results.append(profile(str(artifact.path), hp, n_vocab, on_gpu))
                if args.ort:
                    orts.append(ort_shares(source, args.ort, hp))
            result = results[len(results) // 2] if len(results) % 2 else results[0]
            if len(results) > 1:
                result = {**result, "decode_share_median": median_shares(results, "decode"),
                          "decode_share_repeats": [r["decode"]["share"] for r in results],
                          **{f"{phase}_{figure}_repeats": [r[phase][figure] for r in results]
                             for phase in ("prefill", "decode") for figure in ("coverage", "dilation")}}
            row = {"batch": batch, "prompt": prompt, "seconds": round(time.time() - started, 1), "llama.cpp": result}
            for phase in ("prefill", "decode"):
                coverage = result[phase]["coverage"]
                row[f"{phase}_coverage_ok"] = COVERAGE_TARGET[0] <= coverage <= COVERAGE_TARGET[1]
            if "decode_windowed" in result:  # GPU: what the windows' own kernel times would have said
                row["decode_windowed_minus_plain_points"] = {
                    c: 100 * (result["decode_windowed"]["share"].get(c, 0.0) - result["decode"]["share"].get(c, 0.0))
                    for c in OP_CATEGORIES}
            if args.ort:
                row["onnxruntime"] = {**orts[0], "decode_share_median": median_shares(orts, "decode"),
                                      "decode_share_repeats": [o["decode"]["share"] for o in orts]}
                ours, theirs = median_shares(results, "decode"), median_shares(orts, "decode")
                row["decode_difference_points"] = {c: 100 * (ours.get(c, 0.0) - theirs.get(c, 0.0))
                                                   for c in OP_CATEGORIES}
                row["decode_agree"] = all(abs(v) <= AGREEMENT_POINTS for v in row["decode_difference_points"].values())
            if args.naive and not rows:
                row["naive_every_node"] = naive_dilation(str(artifact.path), hp, n_vocab)
            rows.append(row)
            print(summary_line(row), flush=True)
    report = {"model": args.model, "quant": args.quant, "threads": args.threads, "gpu_layers": args.gpu_layers,
              "flash_attn": args.flash_attn, "kv_type": args.kv_type, "ort_quant": args.ort, "versions": library_versions(),
              "coverage_target": COVERAGE_TARGET, "agreement_points": AGREEMENT_POINTS, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


def summary_line(row: dict) -> str:
    result = row["llama.cpp"]
    parts = [f"b{row['batch']} p{row['prompt']}"]
    for phase in ("prefill", "decode"):
        p = result[phase]
        shares = " ".join(f"{c[:4]} {100 * v:.1f}" for c, v in p["share"].items() if v >= 0.0005)
        parts.append(f"{phase}: {shares} | step {p['run_ms']:.3f} ms, reconstructed {p['node_ms']:.3f} "
                     f"(coverage {p['coverage']:.3f}), dilation {p['dilation']:.2f}")
    parts.append(f"overhead {result['overhead_us_per_window']:.2f} us/window")
    if "onnxruntime" in row:
        diff = " ".join(f"{c[:4]} {v:+.1f}" for c, v in row["decode_difference_points"].items())
        parts.append(f"llama.cpp - ORT decode points: {diff}")
    if "decode_windowed_minus_plain_points" in row:
        diff = " ".join(f"{c[:4]} {v:+.1f}" for c, v in row["decode_windowed_minus_plain_points"].items())
        parts.append(f"window kernel times - plain kernel times, decode points: {diff}")
    if "naive_every_node" in row:
        naive = row["naive_every_node"]
        parts.append(f"every node observed: dilation {naive['decode_dilation']:.2f}, "
                     f"norms {100 * naive['decode_share'].get('norms', 0):.1f} %")
    return "\n  ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
