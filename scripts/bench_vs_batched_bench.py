"""edgeprof's batched decode against llama.cpp's `llama-batched-bench` built from the same source.

For each batch size B, both sides process B independent prompts of P tokens (prefill) and then decode G
steps for all B sequences together, on the same GGUF file with the same GPU layers, threads and context.
llama-batched-bench feeds random tokens each step (no sampling), so edgeprof is measured with
sampler=none (the same work) and with its default greedy sampler (which also reads the B rows of logits and
takes their argmax). Rounds are interleaved (order rotated each round, after a discarded warm-up round);
ratios are edgeprof / native, median over rounds.

    python scripts/bench_vs_batched_bench.py --model synth:llama-3.2-1b --quant q4_k_m --gpu-layers 99 \
        --batches 1,2,4,8,16,32,64,128 --prompt 128 --gen 128 --rounds 3 \
        --batched-bench /tmp/lcpp-cuda/bin/llama-batched-bench --out results/parity/h100/batched_bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import llama_cpp  # noqa: E402,F401  - before numpy; see edgeprof.backends.llamacpp.lib.load_llama_cpp

from edgeprof.backends.llamacpp.session import LlamaCppSession  # noqa: E402
from edgeprof.bench.measure import make_prompts, run_repetition  # noqa: E402
from edgeprof.config import Hyperparameters  # noqa: E402
from edgeprof.export.gguf_export import export_gguf  # noqa: E402
from edgeprof.results.rundir import library_versions  # noqa: E402
from edgeprof.models.source import resolve  # noqa: E402


def native(tool: Path, model: str, batch: int, prompt: int, gen: int, gpu_layers: int, threads: int) -> tuple[float, float]:
    """(prefill t/s, decode t/s) of one llama-batched-bench measurement at one batch size."""
    context = batch * (prompt + gen)
    out = subprocess.run([str(tool), "-m", model, "-c", str(context), "-b", "2048", "-ub", "512", "-npp", str(prompt),
                          "-ntg", str(gen), "-npl", str(batch), "-ngl", str(gpu_layers), "-t", str(threads),
                          "--output-format", "jsonl"], capture_output=True, text=True, check=True)
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("{") and '"speed_tg"' in line]
    entry = json.loads(lines[-1])
    return float(entry["speed_pp"]), float(entry["speed_tg"])


def edgeprof_rates(model: str, hp: Hyperparameters, host_greedy: bool = False) -> tuple[float, float]:
    """(prefill t/s, decode t/s) of one repetition after one warm-up, in a fresh context (as the native tool).
    `host_greedy`: greedy by a numpy argmax over logits copied to the host (builds without backend sampling)."""
    session = LlamaCppSession(model, hp, need_logits=host_greedy)
    try:
        prompts = make_prompts(hp, session.n_vocab)
        run_repetition(session, prompts, hp)
        run = run_repetition(session, prompts, hp)
    finally:
        session.close()
    return run.prefill_tps, run.decode_tps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="synth:llama-3.2-1b")
    parser.add_argument("--quant", default="q4_k_m")
    parser.add_argument("--batches", default="1,2,4,8,16,32,64,128")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--gpu-layers", type=int, default=99)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batched-bench", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    artifact = export_gguf(resolve(args.model), args.quant)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        samples: dict[str, list[float]] = {k: [] for k in (
            "native_pp", "native_tg", "none_pp", "none_tg", "greedy_pp", "greedy_tg", "greedy_host_pp", "greedy_host_tg")}

        def measure(side: str, keep: bool) -> None:
            if side == "native":
                pp, tg = native(args.batched_bench, artifact.path, batch, args.prompt, args.gen, args.gpu_layers,
                                args.threads)
            else:
                hp = Hyperparameters(batch=batch, prompt_tokens=args.prompt, gen_tokens=args.gen, threads=args.threads,
                                     gpu_layers=args.gpu_layers, sampler="none" if side == "none" else "greedy")
                pp, tg = edgeprof_rates(artifact.path, hp, host_greedy=side == "greedy_host")
            if keep:
                samples[f"{side}_pp"].append(pp)
                samples[f"{side}_tg"].append(tg)

        sides = ["native", "none", "greedy", "greedy_host"]
        for round_index in range(-1, args.rounds):
            shift = round_index % len(sides)
            for side in sides[shift:] + sides[:shift]:
                measure(side, keep=round_index >= 0)
        row = {"batch": batch, "samples": samples}
        for side in ("none", "greedy", "greedy_host"):
            for phase in ("pp", "tg"):
                row[f"ratio_{side}_{phase}"] = statistics.median(
                    e / n for e, n in zip(samples[f"{side}_{phase}"], samples[f"native_{phase}"]))
        rows.append(row)
        print(f"B={batch}: native pp {statistics.median(samples['native_pp']):.0f} tg "
              f"{statistics.median(samples['native_tg']):.0f} t/s | none pp {row['ratio_none_pp']:.3f} "
              f"tg {row['ratio_none_tg']:.3f} | greedy pp {row['ratio_greedy_pp']:.3f} tg {row['ratio_greedy_tg']:.3f} | "
              f"greedy on host tg {row['ratio_greedy_host_tg']:.3f}",
              flush=True)
    print("\n| batch | native prefill t/s | native decode t/s | none/native decode | greedy/native decode "
          "| greedy on host/native decode | none/native prefill |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["samples"]
        print(f"| {r['batch']} | {statistics.median(s['native_pp']):.0f} | {statistics.median(s['native_tg']):.0f} | "
              f"{r['ratio_none_tg']:.3f} | {r['ratio_greedy_tg']:.3f} | {r['ratio_greedy_host_tg']:.3f} | "
              f"{r['ratio_none_pp']:.3f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": sys.argv, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                        "libraries": library_versions(), "model": args.model, "quant": args.quant,
                                        "prompt": args.prompt, "gen": args.gen, "rounds": args.rounds,
                                        "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
