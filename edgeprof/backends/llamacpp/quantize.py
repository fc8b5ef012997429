"""Child process for llama.cpp's quantizer:
`python -m edgeprof.backends.llamacpp.quantize SRC DST QUANT THREADS [IMATRIX]`.
The GGUF exporter (`export/gguf_export.py`) runs it by module name: the exporter needs llama.cpp's
quantizer, never an import of the backend.

A native abort inside `llama_model_quantize` (a bad tensor shape, an allocation failure) then ends only
this child; the parent reports it as one clear error with the tail of the native log.

An importance matrix (a GGUF imatrix file, `backends/llamacpp/imatrix`) goes in through the C API itself:
this llama.cpp's `llama_model_quantize_params.imatrix` is a NULL-terminated array of plain C structs
(`llama_model_imatrix_data`: name, float pointer, size), which ctypes builds; no C++ map is involved. The
file is read and normalised exactly as llama-quantize does (Σ x² / count in float32, 1 for a matrix that
saw no rows) and the same four `quantize.imatrix.*` metadata keys are written, in the same order, so the
output is byte-identical to `llama-quantize --imatrix FILE` (scripts/imatrix_parity.py checks it).
"""

from __future__ import annotations

import ctypes
import sys


def imatrix_params(llama_cpp, params, imatrix_path: str) -> list:
    """Point `params.imatrix` and `params.kv_overrides` at arrays built from the file; returns what must
    stay alive until the quantizer returns."""
    import gguf
    import numpy as np

    from edgeprof.backends.llamacpp.imatrix import imatrix_means

    means = imatrix_means(imatrix_path)
    entries = (llama_cpp.llama_model_imatrix_data * (len(means) + 1))()
    keep: list = [entries]
    for i, (name, values) in enumerate(means.items()):
        values = np.ascontiguousarray(values, dtype=np.float32)
        keep.append(values)
        entries[i].name = name.encode()
        entries[i].data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entries[i].size = values.size
    params.imatrix = entries

    reader = gguf.GGUFReader(imatrix_path)
    fields = reader.fields
    datasets = fields.get("imatrix.datasets")
    dataset = bytes(datasets.parts[datasets.data[0]]).decode() if datasets is not None and datasets.data else None
    chunks_field = fields.get("imatrix.chunk_count")
    chunks = int(chunks_field.parts[chunks_field.data[0]][0]) if chunks_field is not None else 0
    overrides: list[tuple[str, object]] = [("quantize.imatrix.file", imatrix_path)]
    if dataset is not None:
        overrides.append(("quantize.imatrix.dataset", dataset))
    overrides.append(("quantize.imatrix.entries_count", len(means)))
    if chunks > 0:
        overrides.append(("quantize.imatrix.chunks_count", chunks))
    kv = (llama_cpp.llama_model_kv_override * (len(overrides) + 1))()
    for item, (key, value) in zip(kv, overrides):
        item.key = key.encode()
        if isinstance(value, str):
            item.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
            item.value.val_str = value.encode()[:127]  # llama-quantize's strncpy(…, 127)
        else:
            item.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
            item.value.val_i64 = int(value)
    params.kv_overrides = kv  # the zeroed last entry (empty key) ends the array, as llama-quantize's does
    keep.append(kv)
    return keep


def main(argv: list[str]) -> int:
    from edgeprof.lifetime import die_with_parent

    die_with_parent()
    src, dst, quant_name, threads, *rest = argv
    from edgeprof.backends.llamacpp.lib import LogCapture, load_llama_cpp
    from edgeprof.quant import GGUF_QUANTS

    llama_cpp = load_llama_cpp()
    logs = LogCapture()
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, GGUF_QUANTS[quant_name].ftype_constant)
    params.nthread = int(threads)
    keep = imatrix_params(llama_cpp, params, rest[0]) if rest else []
    status = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    del keep
    if status != 0:
        sys.stderr.write(logs.tail(3) + "\n")
    return int(status != 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
