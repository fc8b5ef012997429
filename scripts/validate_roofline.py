"""Set roofline predictions beside measured runs: decode tok/s within 25 % and TTFT within 35 % is the target.

Measures each preset x batch on this host through the real runner (or reads an existing run directory
with --run), predicts the same configurations with this host's calibration (`edgeprof calibrate`), and
prints predicted / measured. The CPU fit sees SmolLM2-135M and Llama-3.2-1B (batch 1 and 4), the GPU fit SmolLM2-135M
and Llama-3.2-1B (batch 1, 4, 16 at prompts 64-1024); the table marks the presets a fit saw.

    python scripts/validate_roofline.py --presets smollm2-135m,smollm2-360m,qwen2.5-0.5b --batch 1,2,4,8,16 \
        --out results/roofline/cpu-host/roofline_validation_cpu.json
    python scripts/validate_roofline.py --presets smollm2-135m,llama-3.2-1b,llama-3.2-3b --batch 1,2,4,8,16 --prompt 128 --gen 32 \
        --threads 16 --gpu-layers -1 --reps 3 --out results/roofline/h100/fitted/roofline_validation_gpu_p128.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import llama_cpp  # noqa: F401  - before numpy; see edgeprof.backends.llamacpp.lib.load_llama_cpp

from edgeprof.analysis.ceilings import device_ceilings  # noqa: E402
from edgeprof.analysis.fit import describe  # noqa: E402
from edgeprof.analysis.roofline import predict  # noqa: E402
from edgeprof.bench.plan import expand  # noqa: E402
from edgeprof.bench.runner import Runner, RunOptions  # noqa: E402
from edgeprof.hardware.devices import load_calibration  # noqa: E402
from edgeprof.hardware.devices import detect_profile  # noqa: E402
from edgeprof.models.presets import get_preset  # noqa: E402
from edgeprof.quant import GGUF_QUANTS  # noqa: E402
from edgeprof.results.records import read_records  # noqa: E402
from edgeprof.results.rundir import create_run_dir  # noqa: E402
from edgeprof.results.summary import summarize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="smollm2-135m,smollm2-360m,qwen2.5-0.5b")
    parser.add_argument("--quant", default="q4_k_m")
    parser.add_argument("--batch", default="1,2,4,8,16")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--gen", type=int, default=32)
    parser.add_argument("--sampler", default="greedy", choices=("greedy", "none"))
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu-layers", type=int, default=0, help="non-zero: run and predict on the GPU")
    parser.add_argument("--run", type=Path, help="an existing run directory instead of measuring")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    profile = detect_profile()
    calibration = load_calibration(profile.name)
    if not calibration:
        sys.exit(f"no calibration for {profile.name}: run `edgeprof calibrate` first")
    quant = GGUF_QUANTS[args.quant]
    on_gpu = args.gpu_layers != 0
    ceilings = device_ceilings(profile, quant, on_gpu=on_gpu, calibration=calibration)
    fits = calibration.get(f"llama_cpp_{'gpu' if on_gpu else 'cpu'}") or {}
    fitted = fits.get("presets") or ([fits["preset"]] if "preset" in fits else [])
    batches = [int(b) for b in args.batch.split(",")]
    if args.run:
        rows = summarize(read_records(args.run / "records.jsonl"))
    else:
        grid = {"batch": batches, "prompt_tokens": [args.prompt], "gen_tokens": [args.gen], "threads": [args.threads],
                "gpu_layers": [args.gpu_layers], "sampler": [args.sampler]}
        configs = expand([f"synth:{p}" for p in args.presets.split(",")], [args.quant], ["llama.cpp"], grid)
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = create_run_dir(Path(tmp))
            Runner(run_dir, {"profile": profile.name}, RunOptions(repetitions=args.reps, warmup=1, fidelity=False)).run(configs)
            rows = summarize(read_records(run_dir.records_path))
    table = []
    for row in rows:
        if row["status"] != "ok":
            continue
        arch = get_preset(row["model"].removeprefix("synth:")).architecture
        p = predict(arch, quant, ceilings, row["batch"], row["prompt_tokens"], row["gen_tokens"],
                    sampler=row["sampler"], ubatch=int(row["n_ubatch"]))
        table.append({"model": row["model"], "batch": row["batch"], "prompt": row["prompt_tokens"], "in_fit": row["model"].removeprefix("synth:") in fitted,
                      "decode_tps_measured": row["decode_tps_mean"], "decode_tps_predicted": p.decode_tps,
                      "ttft_ms_measured": row["ttft_ms_mean"], "ttft_ms_predicted": p.ttft_s * 1e3})
    fit = fits.get(args.quant)
    print(f"{profile.name} {'GPU' if on_gpu else 'CPU'} ceilings: {ceilings.source}; quant {args.quant}, prompt "
          f"{args.prompt}, gen {args.gen}, sampler {args.sampler}, {args.threads} threads")
    print(f"fit on {', '.join(fitted) or 'nothing'}: {describe(fit) if isinstance(fit, dict) else fit}\n")
    print("| model | batch | prompt | decode t/s measured | predicted | ratio | TTFT ms measured | predicted | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    decode_ok = ttft_ok = 0
    for r in table:
        d = r["decode_tps_predicted"] / r["decode_tps_measured"]
        t = r["ttft_ms_predicted"] / r["ttft_ms_measured"]
        decode_ok += abs(d - 1) <= 0.25
        ttft_ok += abs(t - 1) <= 0.35
        print(f"| {r['model']}{' (in fit)' if r['in_fit'] else ''} | {r['batch']} | {r['prompt']} | {r['decode_tps_measured']:.1f} | {r['decode_tps_predicted']:.1f} | "
              f"{d:.2f} | {r['ttft_ms_measured']:.0f} | {r['ttft_ms_predicted']:.0f} | {t:.2f} |")
    print(f"\ndecode within 25 %: {decode_ok}/{len(table)}; TTFT within 35 %: {ttft_ok}/{len(table)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": sys.argv, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                        "device": profile.name, "on_gpu": on_gpu, "ceilings_source": ceilings.source,
                                        "calibration": calibration, "rows": table}, indent=2))


if __name__ == "__main__":
    main()
