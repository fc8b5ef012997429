"""What edgeprof's per-token path costs on top of the bare C calls llama-bench makes per token.

In one process, blocks of decode steps alternate between
  bare:     set position, llama_decode, llama_synchronize (llama-bench's tg loop, from Python via ctypes);
  none:     edgeprof's LlamaCppSession.decode_step with sampler=none;
  greedy:   edgeprof's decode_step with the greedy sampler (reads the logits, one argmax);
all on one model and one context (every variant advances the same KV cache, and the order rotates each
round), so machine drift and context growth hit all three alike and the per-step difference is
edgeprof's own overhead. The
remaining gap to native llama-bench is the Python-to-C call itself, measured by `bench_vs_llama_bench.py`.

    python scripts/bench_step_overhead.py --model synth:smollm2-135m --quant q4_k_m --out results/parity/cpu-host/step_overhead_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import llama_cpp  # noqa: F401  - before numpy; see edgeprof.backends.llamacpp.lib.load_llama_cpp

from edgeprof.backends.llamacpp.session import LlamaCppSession  # noqa: E402
from edgeprof.bench.measure import make_prompts  # noqa: E402
from edgeprof.config import Hyperparameters  # noqa: E402
from edgeprof.export.gguf_export import export_gguf  # noqa: E402
from edgeprof.results.rundir import library_versions  # noqa: E402
from edgeprof.models.source import resolve  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="synth:smollm2-135m")
    parser.add_argument("--quant", default="q4_k_m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--block", type=int, default=8, help="steps per block")
    parser.add_argument("--blocks", type=int, default=40, help="blocks per variant")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    artifact = export_gguf(resolve(args.model), args.quant)
    steps = args.block * args.blocks * 3 + 16
    hp = Hyperparameters(batch=1, prompt_tokens=16, gen_tokens=steps, threads=args.threads,
                         gpu_layers=args.gpu_layers, sampler="none")
    session = LlamaCppSession(artifact.path, hp)
    session.prefill(make_prompts(hp, session.n_vocab))
    lib, ctx, batch = session._llama_cpp, session._ctx, session._decode_batch

    def bare_step() -> None:
        batch.positions[0] = session._step
        session._step += 1
        lib.llama_decode(ctx, batch.raw)
        lib.llama_synchronize(ctx)

    def edgeprof_step(sampler: str):
        def step() -> None:
            session.decode_step()
        step.sampler = sampler
        return step

    variants = {"bare": bare_step, "none": edgeprof_step("none"), "greedy": edgeprof_step("greedy")}
    per_step: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    clock = time.perf_counter_ns
    for block in range(args.blocks):
        for name in order[block % 3:] + order[:block % 3]:
            step = variants[name]
            session.set_sampler(getattr(step, "sampler", "none"))
            batch.tokens[0] = session.last_tokens()[0]
            start = clock()
            for _ in range(args.block):
                step()
            per_step[name].append((clock() - start) / args.block / 1e3)
    session.close()
    median = {name: statistics.median(values) for name, values in per_step.items()}
    result = {
        "command": sys.argv, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "libraries": library_versions(),
        "model": args.model, "quant": args.quant, "threads": args.threads, "gpu_layers": args.gpu_layers,
        "median_step_us": median,
        "overhead_none_us": median["none"] - median["bare"],
        "overhead_greedy_us": median["greedy"] - median["bare"],
        "ratio_none": median["bare"] / median["none"],
        "ratio_greedy": median["bare"] / median["greedy"],
    }
    print(f"median step: bare {median['bare']:.1f} us, edgeprof sampler=none {median['none']:.1f} us, "
          f"greedy {median['greedy']:.1f} us")
    print(f"edgeprof/bare speed: sampler=none {result['ratio_none']:.4f}, greedy {result['ratio_greedy']:.4f} "
          f"(overhead {result['overhead_none_us']:+.1f} / {result['overhead_greedy_us']:+.1f} us per step)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
