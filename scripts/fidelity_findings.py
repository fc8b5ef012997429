"""The quantization comparison of docs/findings.md §9: fidelity of each quantization over the default text,
on the trained model (real weights) and on a synth model (random weights), on both runtimes.

    EDGEPROF_LLAMA_NO_REPACK=1 nice -n 10 python scripts/fidelity_findings.py --out results/fidelity/quantizations_cpu.json

Writes the rows (every fidelity_* figure) as JSON and prints the markdown table findings.md quotes.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from edgeprof.bench.fidelity_run import measure_fidelity_of
from edgeprof.fidelity import FidelitySettings

PLAN = [  # (model, backend, quantizations, chunks): the synth model's bigger vocabulary costs more per chunk
    ("trained:stdlib-llama", "llama.cpp", "f16,q8_0,q6_k,q4_k_m,q4_0,q3_k_m,q2_k", 20),
    ("trained:stdlib-llama", "onnxruntime", "fp32,fp16,int8,int4", 20),
    ("synth:smollm2-135m", "llama.cpp", "f16,q8_0,q4_k_m,q4_0,q2_k", 4),
]


def markdown(rows: list[dict]) -> str:
    lines = ["| model | backend | quant | vs | PPL ± se | KL mean ± se | KL median | KL p99 | KL max | top-1 % ± se | "
             "RMS Δp % |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("fidelity_status") != "ok":
            continue
        kl = (f"{r['fidelity_kl_mean']:.4g} ± {r['fidelity_kl_se']:.1g}" if "fidelity_kl_mean" in r else "-")
        top1 = (f"{100 * r['fidelity_top1_agreement']:.2f} ± {100 * r['fidelity_top1_se']:.2f}"
                if "fidelity_top1_agreement" in r else "-")
        cell = (lambda key, scale=1.0: f"{scale * r[key]:.4g}" if key in r else "-")
        lines.append(f"| {r['model']} | {r['backend']} | {r['quant']} | {r.get('fidelity_parent_quant') or '-'} | "
                     f"{r['fidelity_ppl']:.4g} ± {r['fidelity_ppl_se']:.2g} | {kl} | {cell('fidelity_kl_median')} | "
                     f"{cell('fidelity_kl_p99')} | {cell('fidelity_kl_max')} | {top1} | {cell('fidelity_dp_rms', 100)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/fidelity/quantizations_cpu.json"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows, started = [], time.time()
    for model, backend, quants, chunks in PLAN:
        settings = FidelitySettings(None, 512, chunks)
        rows += [dict(row, chunks_requested=chunks)
                 for row in measure_fidelity_of([model], quants.split(","), [backend], settings, args.threads)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"host": platform.node(), "machine": platform.machine(), "threads": args.threads,
                                    "seconds": round(time.time() - started), "rows": rows}, indent=2) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
