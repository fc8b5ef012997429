"""The tables of docs/benchmarks.md §15 and docs/findings.md "Footsteps measured", from the recorded JSON.

    python scripts/op_profile_tables.py --cpu results/operators/cpu-host --gpu results/operators/h100/session6
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CATEGORIES = ("projections", "attention", "ffn", "norms", "lm_head", "other")


def pct(shares: dict, category: str) -> str:
    return f"{100 * shares.get(category, 0.0):.1f}"


def gpu_rows(folder: Path) -> list[dict]:
    """Session 6's rows: plain-step kernel shares ("plain_cupti", what edgeprof now reports), the windows'
    own, and Nsight Compute's."""
    profile = json.loads((folder / "op_profile_gpu_llama-3.2-1b.json").read_text())
    ncu = json.loads((folder / "ncu_shares_llama-3.2-1b.json").read_text())["rows"]
    rows = []
    for row, check in zip(profile["rows"], ncu):
        measured = row["llama.cpp"]
        plain = row.get("plain_cupti") or {"share": measured["decode"]["share"], "ms": measured["decode"]["ms"],
                                           "unmatched_ms": measured["decode"].get("unmatched_ms", 0.0)}
        reconstructed = sum(plain["ms"].values()) + plain["unmatched_ms"]
        rows.append({"batch": row["batch"], "prompt": row["prompt"], "plain": plain["share"],
                     "windowed": measured["decode"]["share"] if "plain_cupti" in row else measured["decode_windowed"]["share"],
                     "ncu": check["ncu_share"], "step_ms": measured["decode"]["run_ms"], "reconstructed_ms": reconstructed,
                     "dilation": measured["decode"]["dilation"], "prefill_coverage": measured["prefill"]["coverage"]})
    return rows


def check2(rows: list[dict]) -> str:
    lines = ["| B | P | decode shares (%) | " + " | ".join(CATEGORIES) + " | max \\|diff\\| vs Nsight |",
             "|---|---|---|" + "---|" * (len(CATEGORIES) + 1)]
    for r in rows:
        for label, key, first in (("edgeprof (plain-step kernel times)", "plain", True), ("Nsight Compute", "ncu", False),
                                  ("windows' own kernel times", "windowed", False)):
            diff = "" if key == "ncu" else f"{max(abs(100 * (r[key][c] - r['ncu'][c])) for c in CATEGORIES):.1f}"
            lead = f"| {r['batch']} | {r['prompt']} |" if first else "| | |"
            lines.append(f"{lead} {label} | " + " | ".join(pct(r[key], c) for c in CATEGORIES) + f" | {diff} |")
    return "\n".join(lines)


def check3_gpu(rows: list[dict]) -> list[str]:
    return [f"| H100 | {r['batch']} | {r['prompt']} | {r['step_ms']:.3f} ms | {r['reconstructed_ms']:.3f} ms | "
            f"{r['reconstructed_ms'] / r['step_ms']:.2f} | {r['dilation']:.1f} | {r['prefill_coverage']:.2f} |"
            for r in rows]


def cpu_profiles(folder: Path) -> dict[str, dict]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("cpu_*.json"))}


def check3_cpu(profiles: dict[str, dict]) -> list[str]:
    lines = []
    for name, report in profiles.items():
        for row in report["rows"]:
            result = row["llama.cpp"]
            d = result["decode"]
            label = f"CPU {report['model'].removeprefix('synth:')} {report['quant']} fa {report['flash_attn']}"
            lines.append(f"| {label} | {row['batch']} | {row['prompt']} | {d['run_ms']:.2f} ms | {d['node_ms']:.2f} ms | "
                         f"{_figure(result, 'decode', 'coverage')} | {_figure(result, 'decode', 'dilation')} | "
                         f"{_figure(result, 'prefill', 'coverage')} |")
    return lines


def _figure(result: dict, phase: str, figure: str) -> str:
    """One profile's figure, or with repeats their median and range (the plain step drifts meanwhile)."""
    repeats = result.get(f"{phase}_{figure}_repeats")
    if not repeats:
        return f"{result[phase][figure]:.2f}"
    ordered = sorted(repeats)
    return f"{ordered[len(ordered) // 2]:.2f} ({ordered[0]:.2f}–{ordered[-1]:.2f})"


def check1(profiles: dict[str, dict]) -> str:
    lines = ["| flash attn | P | decode shares (%) | " + " | ".join(CATEGORIES) + " | max \\|diff\\| |",
             "|---|---|---|" + "---|" * (len(CATEGORIES) + 1)]
    for report in profiles.values():
        for row in report["rows"]:
            if "onnxruntime" not in row:
                continue
            ours = row["llama.cpp"].get("decode_share_median", row["llama.cpp"]["decode"]["share"])
            theirs = row["onnxruntime"].get("decode_share_median", row["onnxruntime"]["decode"]["share"])
            diff = max(abs(v) for v in row["decode_difference_points"].values())
            lines.append(f"| {report['flash_attn']} | {row['prompt']} | llama.cpp f32 | "
                         + " | ".join(pct(ours, c) for c in CATEGORIES) + " | |")
            lines.append("| | | ONNX Runtime fp32 | " + " | ".join(pct(theirs, c) for c in CATEGORIES) + f" | {diff:.1f} |")
    return "\n".join(lines)


def naive(profiles: dict[str, dict]) -> list[str]:
    lines = []
    for report in profiles.values():
        for row in report["rows"]:
            if "naive_every_node" in row:
                n, d = row["naive_every_node"], row["llama.cpp"]["decode"]
                lines.append(f"| {report['model'].removeprefix('synth:')} {report['quant']} | {row['prompt']} | "
                             f"{d['windows']} windows: dilation {d['dilation']:.2f}, norms {100 * d['share']['norms']:.1f} % | "
                             f"{n['windows']} windows: dilation {n['decode_dilation']:.2f}, norms "
                             f"{100 * n['decode_share']['norms']:.1f} % |")
    return lines


def predicted(side: str, batch: int, prompt: int, calibrations: dict[str, Path]) -> dict[str, float]:
    """The roofline's decode shares for Llama-3.2-1B q4_k_m with the committed calibration of each side (as
    docs/findings.md §2), sampler none like the profile, folded onto the measured categories."""
    from edgeprof.analysis.ceilings import device_ceilings
    from edgeprof.analysis.roofline import predict
    from edgeprof.backends.op_categories import predicted_as_measured
    from edgeprof.hardware.devices import get_profile
    from edgeprof.export.gguf_export import gguf_quant
    from edgeprof.models.presets import get_preset

    arch, quant = get_preset("llama-3.2-1b").architecture, gguf_quant("q4_k_m")
    if side == "CPU host":
        calibration = json.loads(calibrations["cpu"].read_text())["calibration"]
        ceilings = device_ceilings(get_profile("generic-x86-64"), quant, False, calibration)
    else:
        ceilings = device_ceilings(get_profile("h100-sxm"), quant, True, json.loads(calibrations["gpu"].read_text()))
    return predicted_as_measured(predict(arch, quant, ceilings, batch, prompt, 16, sampler="none").shares("decode"))


def footsteps(profiles: dict[str, dict], gpu: list[dict], calibrations: dict[str, Path]) -> str:
    """Measured decode shares of Llama-3.2-1B q4_k_m on both sides, each beside the roofline's prediction."""
    lines = ["| side | B | P | source | " + " | ".join(CATEGORIES) + " |", "|---|---|---|---|" + "---|" * len(CATEGORIES)]
    measured = [("CPU host", row["batch"], row["prompt"], row["llama.cpp"]["decode"]["share"])
                for row in (profiles.get("cpu_llama-3.2-1b_q4_k_m") or {}).get("rows", [])]
    measured += [("H100", r["batch"], r["prompt"], r["plain"]) for r in gpu]
    for side, batch, prompt, shares in measured:
        guess = predicted(side, batch, prompt, calibrations)
        lines.append(f"| {side} | {batch} | {prompt} | measured | " + " | ".join(pct(shares, c) for c in CATEGORIES) + " |")
        lines.append("| | | | predicted | " + " | ".join(pct(guess, c) for c in CATEGORIES) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", type=Path, default=Path("results/operators/cpu-host"))
    parser.add_argument("--gpu", type=Path, default=Path("results/operators/h100/session6"))
    parser.add_argument("--h100-calibration", type=Path, default=Path("results/roofline/h100/fitted/h100-sxm.json"))
    parser.add_argument("--cpu-calibration", type=Path, default=Path("results/roofline/cpu-host/roofline_validation_cpu.json"))
    args = parser.parse_args()
    gpu = gpu_rows(args.gpu)
    cpu = cpu_profiles(args.cpu)
    print("## check 1: llama.cpp f32 vs ONNX Runtime fp32 (SmolLM2-135M, batch 1, CPU host)\n")
    print(check1(cpu))
    print("\n## check 2: H100 decode shares vs Nsight Compute (Llama-3.2-1B q4_k_m)\n")
    print(check2(gpu))
    print("\n## check 3: reconstructed step vs plain step\n")
    print("| where | B | P | plain decode step | reconstructed | coverage | dilation | prefill coverage |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(check3_cpu(cpu) + check3_gpu(gpu)))
    print("\n## grouped windows vs every node observed (CPU host, batch 1)\n")
    print("| model | P | grouped | every node |\n|---|---|---|---|")
    print("\n".join(naive(cpu)))
    print("\n## footsteps measured: Llama-3.2-1B q4_k_m decode shares\n")
    print(footsteps(cpu, gpu, {"cpu": args.cpu_calibration, "gpu": args.h100_calibration}))


if __name__ == "__main__":
    main()
