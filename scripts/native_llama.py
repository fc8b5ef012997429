"""Build llama.cpp's native tools from the same source as the installed llama-cpp-python.

The sdist of llama-cpp-python vendors llama.cpp at the exact commit it was built from, so building
`llama-bench` from it compares edgeprof with the very same kernels. Binaries are cached under
`$EDGEPROF_CACHE/native/`; the build uses llama.cpp's defaults (-march=native, OpenMP) like pip's, and
leaves out ggml's AMX matmul as README's install does (`NO_AMX`: GCC 12 miscompiles its tile configuration).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

from edgeprof.paths import cache_root


# The same flags README's install gives pip (CMAKE_ARGS), so the tools run the library's kernels.
NO_AMX = ["-DCMAKE_C_FLAGS=-U__AMX_INT8__", "-DCMAKE_CXX_FLAGS=-U__AMX_INT8__"]


def source_dir() -> Path:
    version = metadata.version("llama-cpp-python")
    return cache_root() / "native" / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"


def ensure_tool(target: str = "llama-bench", cmake_args: list[str] | None = None) -> Path:
    """Path to a built native tool, downloading the sdist and building it if needed (minutes)."""
    src = source_dir()
    binary = src / "build" / "bin" / target
    if binary.exists():
        return binary
    if not (src / "CMakeLists.txt").exists():
        version = metadata.version("llama-cpp-python")
        dest = cache_root() / "native"
        dest.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(dest),
                        f"llama-cpp-python=={version}"], check=True)
        (archive,) = dest.glob(f"llama_cpp_python-{version}.tar.gz")
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    subprocess.run(["cmake", "-S", str(src), "-B", str(src / "build"), "-DCMAKE_BUILD_TYPE=Release",
                    "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                    "-DLLAMA_BUILD_SERVER=OFF", *NO_AMX, *(cmake_args or [])], check=True)
    subprocess.run(["cmake", "--build", str(src / "build"), "--target", target, "-j"], check=True)
    return binary
