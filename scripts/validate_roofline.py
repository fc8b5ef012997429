"""Set roofline predictions beside measured runs: decode tok/s within 25 % and TTFT within 35 % is the target.

Measures each preset x batch on this host through the real runner (or reads an existing run directory
with --run), predicts the same configurations with this host's calibration (`edgeprof calibrate`), and
prints predicted / measured. The calibration is fitted on SmolLM2-135M at batch 1, so the other presets
and every batch > 1 are out-of-sample.

    python scripts/validate_roofline.py --presets smollm2-135m,smollm2-360m,qwen2.5-0.5b --batch 1,2,4,8,16 \
        --out results/roofline_validation_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import llama_cpp  # noqa: F401  - before numpy; see edgeprof.backends.llamacpp_lib.load_llama_cpp

from edgeprof.analysis.ceilings import device_ceilings  # noqa: E402
from edgeprof.analysis.roofline import predict  # noqa: E402
from edgeprof.bench.plan import expand  # noqa: E402
from edgeprof.bench.runner import Runner, RunOptions  # noqa: E402
from edgeprof.calibrate import load_calibration  # noqa: E402
from edgeprof.devices import detect_profile  # noqa: E402
from edgeprof.presets import get_preset  # noqa: E402
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
    batches = [int(b) for b in args.batch.split(",")]
    if args.run:
        rows = summarize(read_records(args.run / "records.jsonl"))
    else:
        grid = {"batch": batches, "prompt_tokens": [args.prompt], "gen_tokens": [args.gen], "threads": [args.threads],
                "gpu_layers": [args.gpu_layers]}
        configs = expand([f"synth:{p}" for p in args.presets.split(",")], [args.quant], ["llama.cpp"], grid)
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = create_run_dir(Path(tmp))
            Runner(run_dir, {"profile": profile.name}, RunOptions(repetitions=2, warmup=1)).run(configs)
            rows = summarize(read_records(run_dir.records_path))
    table = []
    for row in rows:
        if row["status"] != "ok":
            continue
        arch = get_preset(row["model"].removeprefix("synth:")).architecture
        p = predict(arch, quant, ceilings, row["batch"], row["prompt_tokens"], row["gen_tokens"])
        table.append({"model": row["model"], "batch": row["batch"],
                      "decode_tps_measured": row["decode_tps_mean"], "decode_tps_predicted": p.decode_tps,
                      "ttft_ms_measured": row["ttft_ms_mean"], "ttft_ms_predicted": p.ttft_s * 1e3})
    print(f"{profile.name} {'GPU' if on_gpu else 'CPU'} ceilings: {ceilings.source} ({ceilings.flops_per_s / 1e12:.3g} "
          f"TFLOP/s, {ceilings.bytes_per_s / 1e9:.4g} GB/s, {ceilings.kernel_overhead_s * 1e6:.3g} us/kernel); quant "
          f"{args.quant}, prompt {args.prompt}, gen {args.gen}, {args.threads} threads\n")
    print("| model | batch | decode t/s measured | predicted | ratio | TTFT ms measured | predicted | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    decode_ok = ttft_ok = 0
    for r in table:
        d = r["decode_tps_predicted"] / r["decode_tps_measured"]
        t = r["ttft_ms_predicted"] / r["ttft_ms_measured"]
        decode_ok += abs(d - 1) <= 0.25
        ttft_ok += abs(t - 1) <= 0.35
        print(f"| {r['model']} | {r['batch']} | {r['decode_tps_measured']:.1f} | {r['decode_tps_predicted']:.1f} | "
              f"{d:.2f} | {r['ttft_ms_measured']:.0f} | {r['ttft_ms_predicted']:.0f} | {t:.2f} |")
    print(f"\ndecode within 25 %: {decode_ok}/{len(table)}; TTFT within 35 %: {ttft_ok}/{len(table)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": sys.argv, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                        "device": profile.name, "on_gpu": on_gpu, "ceilings_source": ceilings.source,
                                        "calibration": calibration, "rows": table}, indent=2))


if __name__ == "__main__":
    main()
