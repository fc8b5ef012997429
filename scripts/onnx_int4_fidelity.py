"""ONNX Runtime's int4 variants on the trained model: KL against the fp32 parent, as the calibrated sweep measures it.

The fidelity half of `scripts/calibrated_sweep.py` for ONNX only (no speed rounds): `trained:stdlib-llama`, the
held-out default text, 10 chunks of 512 tokens, GPTQ calibrated on the sweep's training-distribution text.
Made to check edgeprof's own GPTQ (export/onnx_gptq.py) against round to nearest and HQQ.

    python scripts/onnx_int4_fidelity.py --out results/quantization/calibrated/onnx_int4_gptq.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from calibrated_sweep import THREADS, calibration_text

from edgeprof.bench.fidelity_run import measure_fidelity_of
from edgeprof.fidelity import FidelitySettings
from edgeprof.export.onnx_export import GPTQ_METHOD, export_onnx
from edgeprof.models.source import resolve

QUANTS = ["fp32", "int4", "int4-gptq", "int4-hqq"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        calibration = calibration_text(Path(scratch))
        started = time.time()
        rows = measure_fidelity_of(["trained:stdlib-llama"], QUANTS, ["onnxruntime"], FidelitySettings(None, 512, 10),
                                   THREADS, calibration_text=str(calibration))
        source = resolve("trained:stdlib-llama")
        for row in rows:
            row["bytes"] = export_onnx(source, row["quant"], calibration_text=str(calibration)).bytes
    result = {"model": "trained:stdlib-llama", "chunks": 10, "ctx": 512, "gptq": GPTQ_METHOD,
              "seconds": round(time.time() - started, 1), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    for row in rows:
        kl = row.get("fidelity_kl_mean")
        print(f"{row['quant']:10} {row['bytes'] / 1e6:6.2f} MB  PPL {row['fidelity_ppl']:.3f}  "
              + (f"KL {kl * 1e3:.3f} ± {row['fidelity_kl_se'] * 1e3:.3f} e-3  top-1 {row['fidelity_top1_agreement']:.3f}"
                 if kl is not None else "(parent)"))


if __name__ == "__main__":
    main()
