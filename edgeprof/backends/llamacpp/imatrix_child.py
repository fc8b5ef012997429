"""The importance-matrix child process: `python -m edgeprof.backends.llamacpp.imatrix_child MODEL TEXT OUT
CTX THREADS DATASET`.

Its own module so that llama.cpp's shared library is loaded before numpy's (`load_llama_cpp`'s docstring):
`imatrix` imports numpy at its top, and started as `-m edgeprof.backends.llamacpp.imatrix` it crashed a
CUDA build's `llama_model_load_from_file` with SIGSEGV on the H200 machine, with or without a visible GPU,
while the worker (llama.cpp first) loaded the same file. Nothing here may import numpy before `main`
has loaded llama.cpp; tests/test_imatrix.py checks it.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from edgeprof.backends.llamacpp.lib import load_llama_cpp
    from edgeprof.lifetime import die_with_parent

    die_with_parent()
    load_llama_cpp()  # before numpy (imported by the collector below)
    from edgeprof.backends.llamacpp.imatrix import collect, write_imatrix_gguf

    model, text_path, out, chunk_tokens, threads, dataset = argv
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    result = collect(model, text, int(chunk_tokens), int(threads))
    write_imatrix_gguf(out, result, dataset)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
