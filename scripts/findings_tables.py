"""Markdown tables for docs/findings.md: each paper-reproduction sweep, edge (CPU host) beside server (H100),
joined by config id, with the roofline's decode bound and predicted operator shares per side.

    python scripts/findings_tables.py --cpu results/sweeps/cpu-host --gpu results/sweeps/h100
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from edgeprof.analysis.compare import join, load_run


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"


def table(cpu_dir: Path, gpu_dir: Path) -> str:
    cpu, gpu = load_run(cpu_dir), load_run(gpu_dir)
    lines = ["| model | quant | B | P | G | CPU decode t/s | H100 decode t/s | H100/CPU | CPU TTFT ms | H100 TTFT ms "
             "| H100 J/tok | top-1 / KL |", "|" + "---|" * 12]
    for item in join([cpu, gpu]):
        a, b = item.by_run
        if a is None or b is None:
            continue
        ident = item.identity
        fidelity = a.get("fidelity_top1_agreement")
        fid = f"{fidelity:.2f} / {a['fidelity_kl_mean']:.2g}" if fidelity is not None else "–"
        lines.append(f"| {str(ident['model']).removeprefix('synth:')} | {ident['quant']} | {ident['batch']} | "
                     f"{ident['prompt_tokens']} | {ident['gen_tokens']} | {_fmt(a['decode_tps_mean'])} | "
                     f"{_fmt(b['decode_tps_mean'])} | {_fmt(b['decode_tps_mean'] / a['decode_tps_mean'])} | "
                     f"{_fmt(a['ttft_ms_mean'])} | {_fmt(b['ttft_ms_mean'])} | {_fmt(b['j_per_token_decode_mean'])} | "
                     f"{fid} |")
    return "\n".join(lines)


def threads_table(run_dir: Path, label: str) -> str:
    run = load_run(run_dir)
    lines = [f"| {label} threads | decode t/s | TTFT ms | ITL p50 ms |", "|---|---|---|---|"]
    for row in sorted(run.rows, key=lambda r: r["threads"]):
        lines.append(f"| {row['threads']} | {_fmt(row['decode_tps_mean'])} | {_fmt(row['ttft_ms_mean'])} | "
                     f"{_fmt(row['itl_ms_p50_mean'])} |")
    return "\n".join(lines)


def shares_table(h100_calibration: Path, cpu_validation: Path) -> str:
    """Roofline decode-step shares by operator category as the prompt grows, on each side (calibrated)."""
    import json

    from edgeprof.analysis.ceilings import device_ceilings
    from edgeprof.analysis.roofline import CATEGORIES, predict
    from edgeprof.hardware.devices import get_profile
    from edgeprof.export.gguf_export import gguf_quant
    from edgeprof.models.presets import get_preset

    arch, quant = get_preset("llama-3.2-1b").architecture, gguf_quant("q4_k_m")
    cpu_calibration = json.loads(cpu_validation.read_text())["calibration"]  # the committed one, not this host's
    sides = [("CPU host", device_ceilings(get_profile("generic-x86-64"), quant, False, cpu_calibration)),
             ("H100", device_ceilings(get_profile("h100-sxm"), quant, True, json.loads(h100_calibration.read_text())))]
    lines = ["| side | prompt | " + " | ".join(CATEGORIES) + " | bound |", "|" + "---|" * (len(CATEGORIES) + 3)]
    for label, ceilings in sides:
        for prompt in (32, 128, 512, 2048):
            p = predict(arch, quant, ceilings, 1, prompt, 32)
            shares = p.shares("decode")
            lines.append(f"| {label} | {prompt} | " + " | ".join(f"{100 * shares.get(c, 0):.0f}%" for c in CATEGORIES)
                         + f" | {p.bound('decode')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", type=Path, required=True, help="folder with <sweep>/<run id>/ from the CPU host")
    parser.add_argument("--gpu", type=Path, required=True, help="the same from the H100 host")
    parser.add_argument("--h100-calibration", type=Path,
                        default=Path("results/roofline/h100/fitted/h100-sxm.json"))
    parser.add_argument("--cpu-calibration", type=Path, default=Path("results/roofline/cpu-host/roofline_validation_cpu.json"),
                        help="a validate_roofline.py JSON whose calibration the CPU rows use")
    args = parser.parse_args()
    print("### predicted decode-step shares, Llama-3.2-1B q4_k_m, batch 1\n\n" + shares_table(args.h100_calibration, args.cpu_calibration))
    for sweep in ("batch", "prompt", "quant"):
        cpu_runs, gpu_runs = sorted((args.cpu / sweep).glob("*/")), sorted((args.gpu / sweep).glob("*/"))
        if cpu_runs and gpu_runs:
            print(f"\n### {sweep}\n\n{table(cpu_runs[-1], gpu_runs[-1])}")
    for side, folder in (("CPU host", args.cpu), ("H100 host", args.gpu)):
        runs = sorted((folder / "threads").glob("*/"))
        if runs:
            print(f"\n### threads ({side})\n\n{threads_table(runs[-1], side)}")


if __name__ == "__main__":
    main()
