"""edgeprof's llama.cpp path against native llama-bench built from the same llama.cpp source.

Both sides run the same GGUF files with the same threads, batch sizes and flash-attention setting,
interleaved round by round with the order rotated each round (native, greedy, none; greedy, none, native;
...) after a discarded warm-up round, because shared machines drift.
Prefill is llama-bench's pp<P>; decode is its tg<G> at depth P (-d P), which is exactly the context
edgeprof decodes at after a P-token prompt. edgeprof is measured twice: with the greedy sampler (its
default, which reads the logits and takes an argmax each step) and with sampler=none (no logits read,
as llama-bench). Ratios are edgeprof / native; the figure reported is the median over rounds.

    python scripts/bench_vs_llama_bench.py --model synth:smollm2-135m --quants q4_k_m,f16 \
        --pairs 128:64,512:128 --threads 2 --rounds 6 --reps 2 --out results/parity/cpu-host/bench_vs_llama_bench_cpu.json
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

from native_llama import ensure_tool  # noqa: E402

from edgeprof.backends.llamacpp.session import LlamaCppSession  # noqa: E402
from edgeprof.bench.measure import make_prompts, run_repetition  # noqa: E402
from edgeprof.config import Hyperparameters  # noqa: E402
from edgeprof.export.gguf_export import export_gguf  # noqa: E402
from edgeprof.results.rundir import library_versions  # noqa: E402
from edgeprof.models.source import resolve  # noqa: E402


def native(bench: Path, model: str, args: list[str]) -> float:
    """Mean tokens/s of one llama-bench test (its own warm-up and repetitions)."""
    out = subprocess.run([str(bench), "-m", model, "-o", "json", *args], capture_output=True, text=True, check=True)
    (entry,) = json.loads(out.stdout)
    return float(entry["avg_ts"])


def edgeprof_rates(model: str, hp: Hyperparameters, reps: int, host_greedy: bool = False) -> tuple[float, float]:
    """Median prefill and decode tokens/s over `reps` repetitions after one warm-up. `host_greedy`: greedy by
    a numpy argmax over logits copied to the host (the path for builds without backend sampling)."""
    session = LlamaCppSession(model, hp, need_logits=host_greedy)
    try:
        prompts = make_prompts(hp, session.n_vocab)
        run_repetition(session, prompts, hp)
        runs = [run_repetition(session, prompts, hp) for _ in range(reps)]
    finally:
        session.close()
    return statistics.median(r.prefill_tps for r in runs), statistics.median(r.decode_tps for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="synth:smollm2-135m")
    parser.add_argument("--quants", default="q4_k_m,f16")
    parser.add_argument("--pairs", default="128:64,512:128", help="prompt:generate pairs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--flash-attn", choices=["on", "off", "auto"], default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup-rounds", type=int, default=1, help="rounds run first and discarded")
    parser.add_argument("--reps", type=int, default=3, help="repetitions inside each measurement")
    parser.add_argument("--llama-bench", type=Path, help="a built llama-bench (default: build from the sdist)")
    parser.add_argument("--out", type=Path, help="write the raw results as JSON here")
    args = parser.parse_args()

    bench = args.llama_bench or ensure_tool("llama-bench")
    source = resolve(args.model)
    pairs = [tuple(int(x) for x in pair.split(":")) for pair in args.pairs.split(",")]
    common = ["-t", str(args.threads), "-ngl", str(args.gpu_layers), "-fa", args.flash_attn,
              "-r", str(args.reps)]
    rows = []
    for quant in args.quants.split(","):
        artifact = export_gguf(source, quant)
        for prompt, gen in pairs:
            samples: dict[str, list[float]] = {k: [] for k in (
                "native_pp", "native_tg", "greedy_pp", "greedy_tg", "none_pp", "none_tg", "greedy_host_pp", "greedy_host_tg")}
            for round_index in range(-args.warmup_rounds, args.rounds):
                keep = round_index >= 0  # negative rounds warm caches and clocks and are discarded

                def measure_native() -> None:
                    pp = native(bench, artifact.path, ["-p", str(prompt), "-n", "0", *common])
                    tg = native(bench, artifact.path, ["-p", "0", "-n", str(gen), "-d", str(prompt), *common])
                    if keep:
                        samples["native_pp"].append(pp)
                        samples["native_tg"].append(tg)

                def measure_edgeprof(side: str) -> None:
                    sampler = "none" if side == "none" else "greedy"
                    hp = Hyperparameters(batch=1, prompt_tokens=prompt, gen_tokens=gen, threads=args.threads,
                                         gpu_layers=args.gpu_layers, flash_attn=args.flash_attn, sampler=sampler)
                    pp, tg = edgeprof_rates(artifact.path, hp, args.reps, host_greedy=side == "greedy_host")
                    sampler = side
                    if keep:
                        samples[f"{sampler}_pp"].append(pp)
                        samples[f"{sampler}_tg"].append(tg)

                steps = [measure_native, lambda: measure_edgeprof("greedy"), lambda: measure_edgeprof("none"),
                         lambda: measure_edgeprof("greedy_host")]
                shift = round_index % len(steps)  # rotate the order so no side always goes first
                for step in steps[shift:] + steps[:shift]:
                    step()
            row = {"quant": quant, "prompt": prompt, "gen": gen, "samples": samples}
            for side in ("greedy", "none", "greedy_host"):
                for phase in ("pp", "tg"):
                    ratios = [e / n for e, n in zip(samples[f"{side}_{phase}"], samples[f"native_{phase}"])]
                    row[f"ratio_{side}_{phase}"] = statistics.median(ratios)
            rows.append(row)
            print(f"{quant} p{prompt} g{gen}: native pp {statistics.median(samples['native_pp']):.1f} "
                  f"tg {statistics.median(samples['native_tg']):.1f} | ratio greedy pp {row['ratio_greedy_pp']:.3f} "
                  f"tg {row['ratio_greedy_tg']:.3f} | sampler=none pp {row['ratio_none_pp']:.3f} "
                  f"tg {row['ratio_none_tg']:.3f} | greedy on host tg {row['ratio_greedy_host_tg']:.3f}", flush=True)

    print("\n| model | quant | prompt | gen | native pp t/s | native tg t/s | edgeprof/native pp | edgeprof/native tg "
          "| sampler=none pp | sampler=none tg |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["samples"]
        print(f"| {args.model} | {r['quant']} | {r['prompt']} | {r['gen']} | {statistics.median(s['native_pp']):.1f} | "
              f"{statistics.median(s['native_tg']):.1f} | {r['ratio_greedy_pp']:.3f} | {r['ratio_greedy_tg']:.3f} | "
              f"{r['ratio_none_pp']:.3f} | {r['ratio_none_tg']:.3f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": sys.argv, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                        "libraries": library_versions(), "llama_bench": str(bench),
                                        "threads": args.threads, "rounds": args.rounds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
