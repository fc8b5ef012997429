#!/usr/bin/env bash
# Issue 14's families side by side on this CPU host (docs/findings.md §7, docs/benchmarks.md §16): the
# measured runs, this host's calibration, and the tables with predictions. The H100 side is
# `scripts/gpu/device_session.sh families` (FAMILY_MODELS="olmoe-1b-7b" for the MoE).
#   scripts/families_cpu.sh [OUT]        (default results/families/cpu-host; about 30 minutes on 2 cores)
set -euo pipefail
OUT=${1:-results/families/cpu-host}
RUNS="$OUT/runs"
mkdir -p "$RUNS"
M=synth:gemma-3-1b,synth:llama-3.2-1b,synth:qwen3-0.6b,synth:smollm2-360m
python -m edgeprof run -m $M -q q4_k_m -b 1 -p 128,2048 -n 64 -t 2 -r 2 --no-fidelity -o "$RUNS"
python -m edgeprof run -m $M -q q4_k_m -b 16 -p 128 -n 64 -t 2 -r 2 --no-fidelity -o "$RUNS"
python -m edgeprof run -m synth:olmoe-1b-7b -q q4_k_m -b 1,4 -p 128 -n 64 -t 2 -r 2 --no-fidelity -o "$RUNS"
# on a quiet machine: the host's ceilings, then the plan's llama.cpp fit (SmolLM2-135M and Llama-3.2-1B)
python -m edgeprof calibrate --no-gpu --no-llama
cp "$HOME/.config/edgeprof/calibration/$(python -c 'from edgeprof.hardware.devices import detect_profile; print(detect_profile().name)').json" \
  "$OUT/calibration_cpu.json"
python scripts/fit_llama_calibration.py --base "$OUT/calibration_cpu.json" --quants q4_k_m \
  --out "$OUT/calibration_cpu_two_presets.json"
runs=$(for d in "$RUNS"/*/; do echo --run "${d%/}"; done)
# shellcheck disable=SC2086
python scripts/family_tables.py $runs --calibration "$OUT/calibration_cpu_two_presets.json" > "$OUT/families_cpu.md"
cat "$OUT/families_cpu.md"
