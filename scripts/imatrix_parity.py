"""edgeprof's importance matrix and calibrated quantization against llama.cpp's own tools, same source.

1. The matrix: `llama-imatrix` and edgeprof's eval-callback collector (`backends/llamacpp/imatrix`) on the
   same GGUF, text and chunking (-c 512 -b 512 -ub 512, flash attention off, f16 KV cache, N chunks): per
   tensor, counts must be equal and Σ x² agree within float summation error (llama-imatrix sums in float32
   row by row, edgeprof in float64 per call: relative differences of order 1e-6..1e-5 are summation order).
2. The quantizer: the same imatrix file through `llama-quantize --imatrix` and through edgeprof's ctypes
   route (`backends/llamacpp/quantize`: the C API's imatrix array, llama-quantize's four metadata keys) must give
   byte-identical GGUF files, for each type in TYPES; and edgeprof's own matrix through both routes too.

The tools are llama.cpp's, built from the sdist of the installed llama-cpp-python
(scripts/native_llama.py, `ensure_tool("llama-imatrix")`, `ensure_tool("llama-quantize")`); this script never
builds them. Usage: python scripts/imatrix_parity.py [OUT_DIR] (default results/quantization/imatrix_parity, the
committed run of benchmarks §18; results/INDEX.md); writes parity.json and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

CHUNKS = 20
CTX = 512
THREADS = 2
TYPES = ["iq2_xs", "iq3_xxs", "q2_k", "q4_k_m"]


def tool(name: str) -> Path:
    from native_llama import source_dir

    path = Path(os.environ.get("EDGEPROF_LLAMA_BIN", source_dir() / "build" / "bin")) / name
    if not path.exists():
        sys.exit(f"{path} is missing: build it with python -c \"import sys; sys.path.insert(0, 'scripts'); "
                 f"from native_llama import ensure_tool; ensure_tool('{name}')\" (or set EDGEPROF_LLAMA_BIN)")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(out: Path) -> None:
    from edgeprof.backends.llamacpp.imatrix import collect, read_imatrix, write_imatrix_gguf
    from edgeprof.texts import default_fidelity_text
    from edgeprof.export.gguf_export import export_gguf, quantize_gguf
    from edgeprof.quant import GGUF_QUANTS
    from edgeprof.models.source import resolve

    imatrix_bin, quantize_bin = tool("llama-imatrix"), tool("llama-quantize")
    out.mkdir(parents=True, exist_ok=True)
    model = Path(export_gguf(resolve("trained:stdlib-llama"), "f16").path)
    text = default_fidelity_text()
    report: dict = {"model": "trained:stdlib-llama f16", "text": text.name, "chunks": CHUNKS, "ctx": CTX}
    with tempfile.TemporaryDirectory(prefix="imatrix-parity-") as scratch:
        work = Path(scratch)
        theirs, ours = work / "theirs.imatrix.gguf", work / "ours.imatrix.gguf"
        subprocess.run([str(imatrix_bin), "-m", str(model), "-f", str(text), "-o", str(theirs), "-c", str(CTX),
                        "-b", str(CTX), "-ub", str(CTX), "--chunks", str(CHUNKS), "-t", str(THREADS), "-fa", "off",
                        "--no-ppl", "--output-format", "gguf"], check=True, capture_output=True, text=True)
        result = collect(str(model), text.read_text(encoding="utf-8"), CTX, THREADS, max_chunks=CHUNKS)
        write_imatrix_gguf(str(ours), result, text.name)
        a, b = read_imatrix(str(ours)), read_imatrix(str(theirs))
        tensors = {}
        for name in sorted(set(a) | set(b)):
            if name not in a or name not in b:
                tensors[name] = {"missing_in": "edgeprof" if name not in a else "llama-imatrix"}
                continue
            (sa, ca), (sb, cb) = a[name], b[name]
            tensors[name] = {"counts_equal": bool(np.array_equal(ca, cb)), "counts": ca.tolist(),
                             "max_rel_diff": float(np.abs(sa - sb).max() / np.abs(sb).max())}
        report["imatrix"] = {"tensors": tensors,
                             "worst_rel_diff": max(t.get("max_rel_diff", float("inf")) for t in tensors.values()),
                             "all_counts_equal": all(t.get("counts_equal") for t in tensors.values())}
        quantized = {}
        for matrix_name, matrix in (("llama-imatrix's", theirs), ("edgeprof's", ours)):
            for quant in TYPES:
                native, mine = work / f"native-{quant}.gguf", work / f"edgeprof-{quant}.gguf"
                subprocess.run([str(quantize_bin), "--imatrix", str(matrix), str(model), str(native),
                                quant.upper(), str(THREADS)], check=True, capture_output=True, text=True)
                name = quant if GGUF_QUANTS[quant].imatrix else quant + "-imat"
                quantize_gguf(model, mine, GGUF_QUANTS[name], THREADS, imatrix=matrix)
                quantized[f"{quant} with {matrix_name} matrix"] = {
                    "llama-quantize": sha(native), "edgeprof": sha(mine), "identical": sha(native) == sha(mine),
                    "bytes": native.stat().st_size}
        report["quantize"] = quantized
    (out / "parity.json").write_text(json.dumps(report, indent=1))
    print(f"imatrix: {len(report['imatrix']['tensors'])} tensors, counts equal: "
          f"{report['imatrix']['all_counts_equal']}, worst per-tensor relative difference "
          f"{report['imatrix']['worst_rel_diff']:.2e}")
    for label, entry in quantized.items():
        print(f"{label:40} {'byte-identical' if entry['identical'] else 'DIFFERENT'}  {entry['bytes']} B")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=Path("results/quantization/imatrix_parity"),
                        help="folder for parity.json")
    main(parser.parse_args().out)
