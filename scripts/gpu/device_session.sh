#!/usr/bin/env bash
# What edgeprof runs on the lent GPU machine (no package registry there). The command that calls it
# carries .gpu/ (trimmed llama.cpp source and the llama_cpp Python package from the same sdist as this
# machine's llama-cpp-python, plus wheels); see scripts/gpu/README.md for how .gpu/ is made.
#   scripts/gpu/device_session.sh STAGE...   stages: setup build nvml run overhead parity
# Results land in $OUT (the device tool brings them back).
set -uo pipefail
OUT=${OUT:-/tmp/edgeprof-out}
mkdir -p "$OUT"
BUILD=/tmp/lcpp-cuda
export PYTHONPATH="/tmp/site:$PWD/.gpu:$PWD:${PYTHONPATH:-}"
export LLAMA_CPP_LIB_PATH="$BUILD/bin"
export EDGEPROF_CACHE=/tmp/edgeprof-cache
export PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
log() { echo "[$(date +%H:%M:%S)] $*"; }
for stage in "$@"; do
  log "stage $stage"
  case $stage in
    setup)
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl
      nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit --format=csv | tee "$OUT/gpu.csv"
      python3 -c 'import numpy, torch; print("numpy", numpy.__version__, "torch", torch.__version__)' ;;
    build)
      start=$(date +%s)
      bash scripts/gpu/build_llama_cpp_cuda.sh .gpu/llama.cpp "$BUILD" 90 || { tail -30 "$BUILD.build.log"; exit 1; }
      log "build took $(( $(date +%s) - start )) s"
      python3 -c 'import llama_cpp; print("gpu offload:", llama_cpp.llama_supports_gpu_offload())' ;;
    nvml)
      python3 -m pytest -q -m gpu -s tests/test_nvml_gpu.py -p no:cacheprovider 2>&1 | tee "$OUT/nvml_test.log" ;;
    sensors)
      python3 -m edgeprof sensors --json --once | tee "$OUT/sensors.json" ;;
    run)
      python3 -m edgeprof run -m synth:smollm2-135m,synth:llama-3.2-1b -q q4_k_m,f16 -ngl -1 -p 128 -n 128 \
        -b 1,8 -r 3 -o /tmp/gpu-runs 2>&1 | tee "$OUT/run.log"
      tar czf "$OUT/gpu_runs.tar.gz" -C /tmp gpu-runs ;;
    overhead)
      python3 scripts/bench_sampler_overhead.py --model synth:llama-3.2-1b --quant q4_k_m --gpu-layers -1 \
        --gen 256 --rounds 4 --out "$OUT/sampler_overhead_gpu.json" 2>&1 | tee "$OUT/overhead.log" ;;
    parity)
      python3 scripts/bench_vs_llama_bench.py --model synth:llama-3.2-1b --quants q4_k_m,f16 --pairs 512:128 \
        --threads 16 --gpu-layers 99 --rounds 6 --llama-bench "$BUILD/bin/llama-bench" \
        --out "$OUT/bench_vs_llama_bench_gpu.json" 2>&1 | tee "$OUT/parity.log" ;;
  esac
done
