"""Refit the llama.cpp part of a stored calibration with `edgeprof calibrate`'s CPU plan, for some quants only.

`edgeprof calibrate` fits every quantization (q4_k_m, q8_0, f16) and re-measures the triad and BLAS; when a
validation needs one quantization's fit, this runs just that part of the plan and keeps the rest of `--base`.
It made results/families/cpu-host/calibration_cpu_two_presets.json (the plan's SmolLM2-135M and Llama-3.2-1B,
q4_k_m, 2 threads; 2 min 44 s on the 2-core host):

    python scripts/fit_llama_calibration.py --base results/families/cpu-host/calibration_cpu.json --quants q4_k_m \\
        --out results/families/cpu-host/calibration_cpu_two_presets.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import llama_cpp  # noqa: F401  - before numpy; see edgeprof.backends.llamacpp.lib.load_llama_cpp

from edgeprof.analysis.calibration import CPU_PLAN, llama_effective_rates  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="a calibration JSON whose other figures are kept")
    parser.add_argument("--quants", default="q4_k_m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    calibration = json.loads(args.base.read_text())
    calibration["llama_cpp_cpu"] = llama_effective_rates(args.threads, quants=tuple(args.quants.split(",")),
                                                         plan=CPU_PLAN)
    args.out.write_text(json.dumps(calibration, indent=2))
    for quant in args.quants.split(","):
        print(quant, calibration["llama_cpp_cpu"].get(quant))


if __name__ == "__main__":
    main()
