"""Markdown tables for docs/findings.md §7: model families side by side at identical settings, on this CPU
host and on the H100, with the KV cache llama.cpp allocates for each (windowed layers keep only their SWA
cache) beside what a cache without windows would hold.

    python scripts/family_tables.py --run results/families/cpu-host/runs/<run> --run results/families/h100/runs/<run> ...

With --calibration (a calibration JSON, or a validation JSON that holds one under "calibration", with its
"device"), a second table sets the roofline's prediction for each row beside what was measured.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from edgeprof.models.presets import get_preset


def _rows(run_dir: Path) -> list[dict]:
    with (run_dir / "summary.csv").open() as handle:
        return [row for row in csv.DictReader(handle) if row["status"] == "ok"]


def _num(row: dict, key: str) -> float | None:
    try:
        value = float(row.get(key) or "nan")
    except ValueError:
        return None
    return None if math.isnan(value) else value


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"


def kv_megabytes(model: str, batch: int, context: int, ubatch: int) -> tuple[float, float]:
    """(allocated by llama.cpp, without windows) f16 KV cache in MB for `batch` sequences of `context`."""
    arch = get_preset(model.removeprefix("synth:")).architecture
    allocated = arch.kv_cache_bytes(context, 2.0, arch.swa_cache_cells(ubatch)) * batch
    return allocated / 1e6, arch.kv_cache_bytes_per_token() * context * batch / 1e6


def table(run_dirs: list[Path]) -> str:
    lines = ["| device | model | B | P | decode t/s | TTFT ms | J/token (decode) | memory peak MB | KV MB allocated "
             "| KV MB without windows |", "|" + "---|" * 10]
    for run_dir in run_dirs:
        for row in _rows(run_dir):
            batch, prompt, gen = int(row["batch"]), int(row["prompt_tokens"]), int(row["gen_tokens"])
            gpu = int(row["gpu_layers"] or 0) != 0
            memory = _num(row, "gpu_mem_used_mb_peak_mean") if gpu else _num(row, "peak_rss_mb_mean")
            kv, full = kv_megabytes(row["model"], batch, prompt + gen, int(row["n_ubatch"] or 512))
            lines.append(f"| {'H100' if gpu else 'CPU host'} | {row['model'].removeprefix('synth:')} | {batch} | {prompt} "
                         f"| {_fmt(_num(row, 'decode_tps_mean'))} | {_fmt(_num(row, 'ttft_ms_mean'))} "
                         f"| {_fmt(_num(row, 'j_per_token_decode_mean'))} | {_fmt(memory)} | {_fmt(kv)} | {_fmt(full)} |")
    return "\n".join(lines)


def predicted_table(run_dirs: list[Path], calibration_file: Path, on_gpu: bool) -> str:
    """Predicted beside measured decode t/s and TTFT, for each row, with one stored calibration."""
    from edgeprof.analysis.ceilings import device_ceilings
    from edgeprof.analysis.roofline import predict
    from edgeprof.hardware.devices import detect_profile, get_profile
    from edgeprof.quant import GGUF_QUANTS

    stored = json.loads(calibration_file.read_text())
    calibration = stored.get("calibration", stored)
    profile = get_profile(stored["device"]) if "device" in stored else detect_profile()
    lines = [f"calibration: {calibration_file} ({profile.name}, {'GPU' if on_gpu else 'CPU'})", "",
             "| model | B | P | decode t/s measured | predicted | ratio | TTFT ms measured | predicted | ratio |",
             "|" + "---|" * 9]
    within = [0, 0, 0]
    for run_dir in run_dirs:
        for row in _rows(run_dir):
            quant = GGUF_QUANTS[row["quant"]]
            ceilings = device_ceilings(profile, quant, on_gpu, calibration)
            arch = get_preset(row["model"].removeprefix("synth:")).architecture
            batch, prompt = int(row["batch"]), int(row["prompt_tokens"])
            got = predict(arch, quant, ceilings, batch, prompt, int(row["gen_tokens"]), sampler=row["sampler"],
                          ubatch=int(row["n_ubatch"] or 512))
            decode, ttft = _num(row, "decode_tps_mean"), _num(row, "ttft_ms_mean")
            d, t = got.decode_tps / decode, got.ttft_s * 1e3 / ttft
            within = [within[0] + (abs(d - 1) <= 0.25), within[1] + (abs(t - 1) <= 0.35), within[2] + 1]
            lines.append(f"| {row['model'].removeprefix('synth:')} | {batch} | {prompt} | {_fmt(decode)} "
                         f"| {_fmt(got.decode_tps)} | {d:.2f} | {_fmt(ttft)} | {_fmt(got.ttft_s * 1e3)} | {t:.2f} |")
    lines += ["", f"decode within 25 %: {within[0]}/{within[2]}; TTFT within 35 %: {within[1]}/{within[2]}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, action="append", required=True, help="a run directory (repeatable)")
    parser.add_argument("--calibration", type=Path, help="also predict each row with this stored calibration")
    parser.add_argument("--gpu", action="store_true", help="predict for the GPU (the runs offloaded every layer)")
    args = parser.parse_args()
    print(table(args.run))
    if args.calibration:
        print()
        print(predicted_table(args.run, args.calibration, args.gpu))


if __name__ == "__main__":
    main()
