"""Child process for llama.cpp's quantizer: `python -m edgeprof.export.quantize_worker SRC DST QUANT THREADS`.

A native abort inside `llama_model_quantize` (a bad tensor shape, an allocation failure) then ends only
this child; the parent reports it as one clear error with the tail of the native log.
"""

from __future__ import annotations

import ctypes
import sys


def main(argv: list[str]) -> int:
    from edgeprof.lifetime import die_with_parent

    die_with_parent()
    src, dst, quant_name, threads = argv
    from edgeprof.backends.llamacpp_lib import LogCapture, load_llama_cpp
    from edgeprof.quant import GGUF_QUANTS

    llama_cpp = load_llama_cpp()
    logs = LogCapture()
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, GGUF_QUANTS[quant_name].ftype_constant)
    params.nthread = int(threads)
    status = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if status != 0:
        sys.stderr.write(logs.tail(3) + "\n")
    return int(status != 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
