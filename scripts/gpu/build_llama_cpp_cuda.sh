#!/usr/bin/env bash
# Build llama.cpp with CUDA from a source tree: the shared library llama-cpp-python loads
# (via LLAMA_CPP_LIB_PATH) and the native tools edgeprof is compared with, from one build.
#   scripts/gpu/build_llama_cpp_cuda.sh SOURCE_DIR BUILD_DIR [CUDA_ARCH]
set -euo pipefail
src=$1 build=$2 arch=${3:-90}
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DGGML_NATIVE=ON > "$build.cmake.log"
cmake --build "$build" --target llama llama-bench llama-batched-bench llama-perplexity -j "$(nproc)" > "$build.build.log"
ls "$build/bin"
