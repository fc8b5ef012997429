"""Access to the llama.cpp shared library behind llama-cpp-python: import, logs, build facts.

Kept apart from the session so the exporter (quantization) and the environment report can use the
library without pulling in the backend.
"""

from __future__ import annotations

import ctypes
import os
from collections import deque
from importlib import metadata

from edgeprof.errors import BackendUnavailableError


def load_llama_cpp():
    """Import llama_cpp or say how to install it.

    Processes that run models import this before numpy: with a CUDA build, loading numpy's bundled
    runtime libraries first made `llama_model_load_from_file` crash in libstdc++ stream code resolved
    into libggml-cuda.so (seen on an H100 host; loading llama.cpp first avoids it).
    """
    try:
        import llama_cpp
    except ImportError as exc:
        raise BackendUnavailableError(
            f"llama-cpp-python is not importable ({exc}); install it with `pip install llama-cpp-python`"
        ) from None
    return llama_cpp


class LogCapture:
    """Route llama.cpp's log lines into a bounded buffer instead of the terminal.

    Native logs would tear through progress bars; the tail is kept so an error can quote it.
    The ctypes callback is held on the instance so it is never garbage-collected while installed.
    """

    def __init__(self, keep_lines: int = 50):
        self.lines: deque[str] = deque(maxlen=keep_lines)
        llama_cpp = load_llama_cpp()

        def _on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            if text:
                self.lines.append(text.decode("utf-8", "replace").rstrip("\n"))

        self._callback = llama_cpp.llama_log_callback(_on_log)
        llama_cpp.llama_log_set(self._callback, ctypes.c_void_p(0))

    def tail(self, n: int = 5) -> str:
        return " | ".join(line for line in list(self.lines)[-n:] if line.strip())


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # e.g. the package is on PYTHONPATH without dist metadata
        return None


NO_REPACK_ENV = "EDGEPROF_LLAMA_NO_REPACK"


def repack_weights() -> bool:
    """Whether weights may go to llama.cpp's extra CPU buffer types (repacked layouts, AMX): yes unless
    EDGEPROF_LLAMA_NO_REPACK=1, the counterpart of the native tools' --no-repack, for comparing with a native
    run made that way (the fidelity parity of docs/benchmarks.md §17 was; a GCC 12 build with ggml's AMX path
    crashed in its AMX buffer, which README's install now leaves out)."""
    return os.environ.get(NO_REPACK_ENV, "") != "1"


def build_info() -> dict:
    """Versions and capabilities of the installed llama.cpp (for manifests and checks)."""
    llama_cpp = load_llama_cpp()
    return {
        "llama_cpp_python": getattr(llama_cpp, "__version__", None) or _dist_version("llama-cpp-python"),
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
        "repack": repack_weights(),
        "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
    }
