#!/usr/bin/env bash
# What edgeprof runs on the lent GPU machine (no package registry there). The command that calls it
# carries .gpu/ (trimmed llama.cpp source and the llama_cpp Python package from the same sdist as this
# machine's llama-cpp-python, plus wheels); see scripts/gpu/README.md for how .gpu/ is made.
#   scripts/gpu/device_session.sh STAGE...
#   stages: setup prep build unpack pack product sampler-paths nvml sensors run overhead parity parity-table batched sweeps ortrow roofline
#           calibrate roofline-long power-probe energy
#           cupti-probe ops ops-ncu families sustain sustain-wait fidelity calibrated class-factors
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
      touch /tmp/lcpp-cuda.done
      python3 -c 'import llama_cpp; print("gpu offload:", llama_cpp.llama_supports_gpu_offload())' ;;
    unpack)  # a build carried back from an earlier call (.gpu/lcpp-bin/, xz tar split in 15 MB parts)
      mkdir -p "$BUILD/bin" && cat .gpu/lcpp-bin/lcpp-bin.part-* | xz -d | tar -x -C "$BUILD/bin" \
        && touch /tmp/lcpp-cuda.done && python3 -c 'import llama_cpp; print("gpu offload:", llama_cpp.llama_supports_gpu_offload())' ;;
    pack)  # the build, for the next calls to carry instead of building again (6 minutes of device time)
      (cd "$BUILD/bin" && tar -cf - *.so* llama-bench llama-batched-bench llama-perplexity | xz -T0 -6) \
        | split -b 15M - "$OUT/lcpp-bin.part-" ;;
    product)  # issue 25: `edgeprof run` against llama-bench / llama-batched-bench (PRODUCT_ARGS)
      while [ ! -e /tmp/prep-llama-3.2-1b.done ]; do sleep 2; done
      python3 scripts/bench_product_path.py --model synth:llama-3.2-1b --quant q4_k_m --gpu-layers -1 \
        --bin "$BUILD/bin" ${PRODUCT_ARGS:---prompts 512,2048 --rounds 3} --out "$OUT/product_path_gpu.json" 2>&1 \
        | grep -v "^llama_\|^load\|^print_info\|^graph_\|^sched_" | tee -a "$OUT/product_path.log" ;;
    sampler-paths)  # issue 25: every greedy path in one process (investigation)
      while [ ! -e /tmp/prep-llama-3.2-1b.done ]; do sleep 2; done
      python3 scripts/gpu/sampler_paths.py --batches 1,16,128 --prompt 512 --gen 128 --rounds 3 --reps 2 \
        --out "$OUT/sampler_paths.json" 2>&1 | grep "^{" | tee "$OUT/sampler_paths.log" ;;
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
    prep)  # make the parity table's GGUF files in the background while the build runs (detached)
      # f16 needs no llama.cpp; q4_k_m uses its quantizer, so it waits for the build's marker.
      setsid nohup python3 -c '
import time
from pathlib import Path
from edgeprof.models.source import resolve
from edgeprof.export.gguf_export import export_gguf
import os
names = os.environ.get("PREP_MODELS", "smollm2-135m llama-3.2-1b llama-3.2-3b llama-3.1-8b").split()
for name in names:
    source = resolve("synth:" + name)
    export_gguf(source, "f16")
    # the f16 GGUF is the parent of every quantization; the checkpoint is not needed again (disk is 64 GB)
    (source.hf_folder() / "model.safetensors").unlink(missing_ok=True)
    print("f16", name, time.strftime("%X"), flush=True)
while not Path("/tmp/lcpp-cuda.done").exists():
    time.sleep(2)
for name in names:
    export_gguf(resolve("synth:" + name), "q4_k_m", threads=12)
    Path("/tmp/prep-" + name + ".done").touch()
    print("ready", name, time.strftime("%X"), flush=True)
' > /tmp/prep.log 2>&1 < /dev/null &
      log "prep started" ;;
    prep-status)
      cat /tmp/prep.log; ls -la /tmp/prep-*.done 2>/dev/null; df -h /tmp | tail -1 ;;
    parity-table)  # PARITY_MODELS="smollm2-135m llama-3.2-1b ..." (each waits for its prep marker)
      for m in ${PARITY_MODELS:-smollm2-135m llama-3.2-1b llama-3.2-3b llama-3.1-8b}; do
        while [ ! -e /tmp/prep-$m.done ]; do sleep 5; done
        python3 scripts/bench_vs_llama_bench.py --model synth:$m --quants q4_k_m,f16 --pairs 512:128 --threads 16 \
          --gpu-layers 99 --rounds 3 --reps 2 --llama-bench "$BUILD/bin/llama-bench" \
          --out "$OUT/parity_$m.json" 2>&1 | tail -3 | tee -a "$OUT/parity_table.log"
      done ;;
    batched)
      python3 scripts/bench_vs_batched_bench.py --model synth:llama-3.2-1b --quant q4_k_m --gpu-layers 99 \
        --batches 1,2,4,8,16,32,64,128 --prompt 128 --gen 128 --rounds 2 \
        --batched-bench "$BUILD/bin/llama-batched-bench" --out "$OUT/batched_bench.json" 2>&1 | tee "$OUT/batched.log" ;;
    sweeps)  # SWEEPS="batch prompt quant threads"
      for s in ${SWEEPS:-batch prompt quant threads}; do
        python3 -m edgeprof sweep scripts/sweeps/$s.yaml -o /tmp/gpu-sweeps/$s 2>&1 | tail -40 \
          | tee -a "$OUT/sweeps.log"
      done
      tar czf "$OUT/gpu_sweeps.tar.gz" -C /tmp gpu-sweeps ;;
    ortrow)  # ONNX Runtime (CPU provider, 16 cores) beside llama.cpp on the server's CPU
      python3 -m edgeprof sweep scripts/sweeps/backends.yaml -o /tmp/gpu-ort 2>&1 | tail -40 \
        | tee "$OUT/ortrow.log"
      tar czf "$OUT/gpu_ort.tar.gz" -C /tmp gpu-ort ;;
    calibrate)  # copy/matmul ceilings and the llama.cpp fits (CPU and GPU), once prep's GGUF files are done
      [ -e /tmp/lcpp-cuda.done ] || { log "no llama.cpp build on this machine: run setup prep build first"; exit 3; }
      for m in ${PREP_MODELS:-smollm2-135m llama-3.2-1b llama-3.2-3b llama-3.1-8b}; do
        while [ ! -e /tmp/prep-$m.done ]; do sleep 5; done
      done
      start=$(date +%s)
      python3 -m edgeprof calibrate 2>&1 | tail -20 | tee "$OUT/calibrate.log"
      log "calibrate took $(( $(date +%s) - start )) s"
      cp ~/.config/edgeprof/calibration/*.json "$OUT/" 2>/dev/null ;;
    roofline)  # predictions beside measured runs, with the calibration above
      python3 scripts/validate_roofline.py --presets ${ROOFLINE_PRESETS:-smollm2-135m,llama-3.2-1b,llama-3.2-3b,llama-3.1-8b} \
        --batch 1,2,4,8,16 --prompt ${ROOFLINE_PROMPT:-128} --gen 32 --threads 16 --gpu-layers -1 --reps 3 \
        --out "$OUT/roofline_validation_gpu.json" 2>&1 | tee "$OUT/roofline.log" ;;
    roofline-long)  # the same presets at a longer prompt, predicted with the calibration above
      python3 scripts/validate_roofline.py --presets ${ROOFLINE_PRESETS:-smollm2-135m,llama-3.2-1b,llama-3.2-3b,llama-3.1-8b} \
        --batch 1,2,4,8,16 --prompt 512 --gen 64 --threads 16 --gpu-layers -1 --reps 3 \
        --out "$OUT/roofline_validation_gpu_p512.json" 2>&1 | tee "$OUT/roofline_p512.log" ;;
    power-probe)  # what each NVML power source means here: read cost, refresh interval, lag behind a load step
      python3 scripts/gpu/probe_nvml_power.py --out "$OUT/nvml_power_probe.json" 2>&1 | tail -40 ;;
    energy)  # edgeprof's default J/token against a sustained native reference (issue 12)
      for m in ${PREP_MODELS:-smollm2-135m llama-3.2-1b}; do
        while [ ! -e /tmp/prep-$m.done ]; do sleep 5; done
      done
      python3 scripts/validate_energy.py --batched-bench "$BUILD/bin/llama-batched-bench" \
        --configs ${ENERGY_CONFIGS:-smollm2-135m:1,llama-3.2-1b:1,llama-3.2-1b:8} --runs-dir /tmp/energy-runs \
        --out "$OUT/energy_validation.json" 2>&1 | tee "$OUT/energy_validation.log"
      tar czf "$OUT/energy_runs.tar.gz" -C /tmp energy-runs ;;
    cupti-probe)  # whether cupti-python starts here and what a decode step's kernels look like
      python3 -c 'from cupti import cupti; print("cupti", cupti.get_version(), cupti.get_timestamp())' 2>&1 | tail -3
      ls /usr/local/cuda/extras/CUPTI/lib64/ 2>/dev/null | head -5 ;;
    ops)  # issue 13: measured operator shares on the GPU (CUPTI per window), checks 2 and 3; OPS_PROMPTS, OPS_BATCHES
      for m in ${PREP_MODELS:-llama-3.2-1b}; do
        while [ ! -e /tmp/prep-$m.done ]; do sleep 5; done
        python3 scripts/validate_op_profile.py --model synth:$m --quant q4_k_m --gpu-layers -1 --threads 16 \
          --batches ${OPS_BATCHES:-1,16} --prompts ${OPS_PROMPTS:-128,2048} --out "$OUT/op_profile_gpu_$m.json" \
          2>&1 | grep -v "^llama_\|^load\|^print_info\|^graph_\|^sched_" | tee "$OUT/op_profile_gpu_$m.log"
      done ;;
    class-factors)  # issue 23: the three models on this GPU uncalibrated, and what the class factors predicted
      # (run it before any `calibrate` stage: a calibration on this machine would override the class factors)
      python3 -m edgeprof run -m synth:llama-3.2-1b,synth:gemma-3-1b,synth:qwen3-0.6b -q q4_k_m -ngl -1 -p 512 \
        -n 128 -b 1,8 -r 3 --no-fidelity -o /tmp/class-runs 2>&1 | tee "$OUT/class_factors_run.log"
      for m in llama-3.2-1b gemma-3-1b qwen3-0.6b; do
        for c in auto datasheet; do
          COLUMNS=200 python3 -m edgeprof predict -m synth:$m -q q4_k_m -b 1,8 -p 512 -n 128 --ceilings $c
        done
      done 2>&1 | tee "$OUT/class_factors_predict.log"
      tar czf "$OUT/class_runs.tar.gz" -C /tmp class-runs ;;
    families)  # issue 14: families side by side at identical settings (FAMILY_MODELS, each waits for its prep marker)
      models=""
      for m in ${FAMILY_MODELS:-gemma-3-1b llama-3.2-1b qwen3-0.6b smollm2-360m}; do
        while [ ! -e /tmp/prep-$m.done ]; do sleep 5; done
        models="$models${models:+,}synth:$m"
      done
      python3 -m edgeprof run -m "$models" -q q4_k_m -ngl -1 -t 16 -b ${FAMILY_BATCHES:-1,16} \
        -p ${FAMILY_PROMPTS:-128,2048} -n 64 -r 3 -o /tmp/family-runs 2>&1 \
        | grep -v "^llama_\|^load\|^print_info\|^graph_\|^sched_" | tail -30 | tee -a "$OUT/families.log"
      tar czf "$OUT/family_runs.tar.gz" -C /tmp family-runs ;;
    ops-ncu)  # the same decode steps timed by Nsight Compute, kernels aligned to the profiled categories
      for m in ${PREP_MODELS:-llama-3.2-1b}; do
        python3 scripts/gpu/ncu_decode_shares.py --profile "$OUT/op_profile_gpu_$m.json" --model synth:$m \
          --quant q4_k_m --out "$OUT/ncu_shares_$m.json" 2>&1 | tail -12 | tee "$OUT/ncu_shares_$m.log"
      done ;;
    sustain)  # issue 27: one configuration generating back to back for SUSTAIN (10m), detached: a call lasts
      # at most 10 minutes, so `sustain-wait` (called again at once while it says "running") collects it
      m=${SUSTAIN_MODEL:-llama-3.2-3b}
      rm -f /tmp/sustain.done
      setsid nohup bash -c "while [ ! -e /tmp/prep-$m.done ]; do sleep 5; done
        python3 -m edgeprof run -m synth:$m -q q4_k_m -ngl -1 -t 16 -b ${SUSTAIN_BATCH:-64} -p 512 -n 256 -r 3 \
          --no-fidelity --sustain ${SUSTAIN:-10m} --sustain-window 10 -o /tmp/sustain-runs 2>&1 \
          | grep -v '^llama_\|^load\|^print_info\|^graph_\|^sched_' > /tmp/sustain.log
        touch /tmp/sustain.done" > /dev/null 2>&1 < /dev/null &
      log "sustained run started (model $m, ${SUSTAIN:-10m})" ;;
    sustain-wait)  # up to SUSTAIN_WAIT_S (540) s for the sustained run; results so far land in $OUT either way
      waited=0
      while [ ! -e /tmp/sustain.done ] && [ $waited -lt ${SUSTAIN_WAIT_S:-540} ]; do sleep 10; waited=$((waited + 10)); done
      tail -c 4000 /tmp/sustain.log 2>/dev/null | tr '\r' '\n' | tail -25 | tee "$OUT/sustain.log"
      nvidia-smi --query-gpu=name,temperature.gpu,clocks.sm,power.draw,clocks_event_reasons.active --format=csv \
        | tee "$OUT/sustain_nvidia_smi.csv"
      [ -d /tmp/sustain-runs ] && tar czf "$OUT/sustain_runs.tar.gz" -C /tmp sustain-runs
      if [ -e /tmp/sustain.done ]; then log "sustained run done"; else log "sustained run still running: call sustain-wait again"; fi ;;
    parity)
      python3 scripts/bench_vs_llama_bench.py --model synth:llama-3.2-1b --quants q4_k_m,f16 --pairs 512:128 \
        --threads 16 --gpu-layers 99 --rounds 6 --llama-bench "$BUILD/bin/llama-bench" \
        --out "$OUT/bench_vs_llama_bench_gpu.json" 2>&1 | tee "$OUT/parity.log" ;;
    calibrated)  # calibrated GGUF types (IQ, -imat) on the trained model, all layers on the GPU: fidelity and decode
      python3 scripts/calibrated_sweep.py "$OUT/calibrated" --gpu 2>&1 | tee "$OUT/calibrated.log" ;;
    fidelity)  # edgeprof's perplexity/KL vs native llama-perplexity --kl-divergence, all layers on the GPU
      python3 scripts/fidelity_vs_llama_perplexity.py --model trained:stdlib-llama --quants q8_0,q4_k_m,q4_0,q2_k \
        --chunks 20 --threads 16 --gpu-layers -1 --tool "$BUILD/bin/llama-perplexity" \
        --out "$OUT/fidelity_parity_gpu.json" 2>&1 | tee "$OUT/fidelity_parity.log" ;;
  esac
done
