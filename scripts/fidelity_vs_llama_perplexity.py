"""edgeprof's fidelity figures beside native `llama-perplexity` on the same GGUFs and text.

For one model: the parent GGUF (f16 or f32) through `llama-perplexity --kl-divergence-base` (its perplexity,
and the base log-probabilities it saves), each quantization through `llama-perplexity --kl-divergence`
(perplexity, KL, top-1, Δp against that base), and edgeprof's `measure_fidelity` on the same files with
the same chunking. Each figure agrees when |edgeprof - native| is within the native tool's own standard
error for it (perplexity, mean KL, top-1 agreement, mean Δp, RMS Δp); percentiles and maxima are shown
beside, without a standard error to judge them by. Both sides run on the same llama.cpp source
(scripts/native_llama.py builds the native tool; this script never builds it).

    python scripts/fidelity_vs_llama_perplexity.py --model trained:stdlib-llama --quants q8_0,q4_k_m,q4_0,q2_k \
        --out results/fidelity/parity_cpu.json
    # GPU host: add --gpu-layers -1 (both sides offload every layer)

Set EDGEPROF_LLAMA_NO_REPACK=1 to compare without llama.cpp's repacked buffers (both sides then run without extra
buffer types: `--no-repack` natively).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_NUMBER = r"([-+]?[0-9.]+(?:e[-+]?\d+)?|nan|inf)"


def parse_base(output: str) -> dict:
    """`Final estimate: PPL = X +/- Y` of a plain (or --kl-divergence-base) run."""
    match = re.search(rf"Final estimate: PPL = {_NUMBER} \+/- {_NUMBER}", output)
    if not match:
        raise RuntimeError(f"llama-perplexity printed no final estimate: {output[-800:]}")
    return {"ppl": float(match.group(1)), "ppl_se": float(match.group(2))}


def parse_kld(output: str) -> dict:
    """The statistics block of a --kl-divergence run (fractions, not percents; KL in nats)."""
    def pm(label: str, percent: bool = False) -> tuple[float, float]:
        match = re.search(rf"{label}\s*:\s*{_NUMBER}\s*±\s*{_NUMBER}", output)
        if not match:
            raise RuntimeError(f"no '{label}' in llama-perplexity's output: {output[-800:]}")
        scale = 0.01 if percent else 1.0
        return float(match.group(1)) * scale, float(match.group(2)) * scale

    def single(label: str, percent: bool = False) -> float:
        match = re.search(rf"{label}\s*:\s*{_NUMBER}\s*%?", output)
        if not match:
            raise RuntimeError(f"no '{label}' in llama-perplexity's output")
        return float(match.group(1)) * (0.01 if percent else 1.0)

    figures = {}
    figures["ppl"], figures["ppl_se"] = pm(r"Mean PPL\(Q\)")
    figures["parent_ppl"], figures["parent_ppl_se"] = pm(r"Mean PPL\(base\)")
    figures["ln_ppl_ratio"], figures["ln_ppl_ratio_se"] = pm(r"Mean ln\(PPL\(Q\)/PPL\(base\)\)")
    figures["kl_mean"], figures["kl_se"] = pm(r"Mean    KLD")
    figures["kl_max"] = single("Maximum KLD")
    figures["kl_p99"] = single(r"99\.0%   KLD")
    figures["kl_median"] = single("Median  KLD")
    figures["dp_mean"], figures["dp_se"] = pm("Mean    Δp", percent=True)
    figures["dp_rms"], figures["dp_rms_se"] = pm("RMS Δp    ", percent=True)
    figures["top1_agreement"], figures["top1_se"] = pm("Same top p", percent=True)
    return figures


# figure -> the native standard error it is judged by
JUDGED = {"ppl": "ppl_se", "parent_ppl": "parent_ppl_se", "kl_mean": "kl_se", "top1_agreement": "top1_se",
          "dp_mean": "dp_se", "dp_rms": "dp_rms_se", "ln_ppl_ratio": "ln_ppl_ratio_se"}


def native(tool: Path, args: list[str]) -> str:
    command = [str(tool), *args]
    if os.environ.get("EDGEPROF_LLAMA_NO_REPACK") == "1":
        command.append("--no-repack")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: {result.stderr[-1200:]}")
    return result.stdout + result.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="trained:stdlib-llama")
    parser.add_argument("--quants", default="q8_0,q4_k_m,q4_0,q2_k")
    parser.add_argument("--text", default=None, help="default: edgeprof's held-out fidelity text")
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--tool", type=Path, default=None, help="llama-perplexity binary (default: the lead's build)")
    parser.add_argument("--out", type=Path, default=Path("results/fidelity/parity_cpu.json"))
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from native_llama import source_dir

    from edgeprof.backends.llamacpp.lib import build_info, load_llama_cpp

    load_llama_cpp()
    from edgeprof.config import Hyperparameters
    from edgeprof.texts import read_fidelity_text
    from edgeprof.export.gguf_export import export_gguf, gguf_parent_quant
    from edgeprof.fidelity import FidelitySettings, measure_fidelity
    from edgeprof.models.source import resolve

    tool = args.tool or source_dir() / "build" / "bin" / "llama-perplexity"
    if not tool.exists():
        print(f"{tool} is not built (scripts/native_llama.py ensure_tool('llama-perplexity'))", file=sys.stderr)
        return 2
    text = read_fidelity_text(args.text)
    source = resolve(args.model)
    quants = [q for q in args.quants.split(",") if q]
    parent_quant = gguf_parent_quant(source, quants[0]) or "f16"
    parent = export_gguf(source, parent_quant)
    settings = FidelitySettings(text.path, args.ctx, args.chunks)
    hp = Hyperparameters(threads=args.threads, gpu_layers=args.gpu_layers)
    common = ["-f", text.path, "-c", str(args.ctx), "--chunks", str(args.chunks), "-t", str(args.threads),
              "-ngl", str(args.gpu_layers)]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        base_file = str(Path(scratch) / "base.kld")
        started = time.time()
        base = parse_base(native(tool, ["-m", parent.path, *common, "--kl-divergence-base", base_file]))
        ours = measure_fidelity("llama.cpp", parent.path, None, None, hp, settings).figures
        rows.append({"quant": parent_quant, "native": base, "edgeprof": ours,
                     "agrees": {"ppl": abs(ours["ppl"] - base["ppl"]) <= base["ppl_se"]}})
        for quant in quants:
            artifact = export_gguf(source, quant)
            theirs = parse_kld(native(tool, ["-m", artifact.path, *common, "--kl-divergence-base", base_file,
                                             "--kl-divergence"]))
            ours = measure_fidelity("llama.cpp", artifact.path, parent.path, parent_quant, hp, settings).figures
            rows.append({"quant": quant, "native": theirs, "edgeprof": ours,
                         "agrees": {k: abs(ours[k] - theirs[k]) <= theirs[se] for k, se in JUDGED.items()}})
        seconds = time.time() - started
    report = {"model": args.model, "text": Path(text.path).name, "text_sha256": text.sha256, "ctx": args.ctx,
              "chunks": args.chunks, "threads": args.threads, "gpu_layers": args.gpu_layers, "tool": str(tool),
              "no_repack": os.environ.get("EDGEPROF_LLAMA_NO_REPACK") == "1", "host": platform.node(),
              "machine": platform.machine(), "llama_cpp": build_info(), "seconds": round(seconds),
              "rule": "agrees: |edgeprof - native| <= native standard error of that figure", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'quant':8} {'figure':16} {'native':>14} {'± se':>10} {'edgeprof':>14}  agrees")
    for row in rows:
        for key, se_key in JUDGED.items():
            if key in row["native"]:
                print(f"{row['quant']:8} {key:16} {row['native'][key]:14.6g} {row['native'][se_key]:10.2g} "
                      f"{row['edgeprof'][key]:14.6g}  {row['agrees'][key]}")
        for key in ("kl_median", "kl_p99", "kl_max"):
            if key in row["native"]:
                print(f"{row['quant']:8} {key:16} {row['native'][key]:14.6g} {'':>10} {row['edgeprof'][key]:14.6g}")
    print(f"written: {args.out}")
    return 0 if all(all(row["agrees"].values()) for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
