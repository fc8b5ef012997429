"""edgeprof's ONNX Runtime decode loop against optimum's `ORTModelForCausalLM.generate` on the same file,
and against llama.cpp at equal precision (fp32 vs f32, int4 vs q4_0).

All sides use the same threads, prompt and generated lengths. Rounds are interleaved (order rotated each
round, after a discarded warm-up round) because shared machines drift; each figure is a median over rounds.
optimum's decode rate is (t(generate n) - t(generate 1)) / (n - 1), so its prefill is excluded the same way
edgeprof's is. Ratios > 1 mean edgeprof is faster.

    python scripts/bench_ort_decode.py --model synth:smollm2-135m --pairs fp32:f32,int4:q4_0 \
        --prompt 128 --gen 64 --threads 2 --rounds 6 --out results/parity/cpu-host/bench_ort_decode_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import llama_cpp  # noqa: F401  - before numpy; see edgeprof.backends.llamacpp.lib.load_llama_cpp

import numpy as np  # noqa: E402

from edgeprof.backends.base import open_session  # noqa: E402
from edgeprof.bench.measure import make_prompts, run_repetition  # noqa: E402
from edgeprof.config import Hyperparameters  # noqa: E402
from edgeprof.export.gguf_export import export_gguf  # noqa: E402
from edgeprof.export.onnx_export import export_onnx  # noqa: E402
from edgeprof.results.rundir import library_versions  # noqa: E402
from edgeprof.models.source import resolve  # noqa: E402


def edgeprof_decode(backend: str, path: str, hp: Hyperparameters, reps: int) -> float:
    session = open_session(backend, path, hp)
    try:
        prompts = make_prompts(hp, session.n_vocab)
        run_repetition(session, prompts, hp)
        return statistics.median(run_repetition(session, prompts, hp).decode_tps for _ in range(reps))
    finally:
        session.close()


def optimum_decode(folder: Path, hp: Hyperparameters, reps: int) -> float:
    import onnxruntime as ort
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    options = ort.SessionOptions()
    options.intra_op_num_threads = hp.threads
    options.inter_op_num_threads = 1
    model = ORTModelForCausalLM.from_pretrained(folder, session_options=options, provider="CPUExecutionProvider",
                                                use_cache=True)
    ids = torch.from_numpy(make_prompts(hp, model.config.vocab_size).astype(np.int64))
    mask = torch.ones_like(ids)

    def generate(n: int) -> float:
        start = time.perf_counter()
        model.generate(ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                       pad_token_id=0)
        return time.perf_counter() - start

    generate(hp.gen_tokens)  # warm-up
    rates = []
    for _ in range(reps):
        one, full = generate(1), generate(hp.gen_tokens + 1)
        rates.append(hp.batch * hp.gen_tokens / (full - one))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="synth:smollm2-135m")
    parser.add_argument("--pairs", default="fp32:f32,int4:q4_0", help="ONNX quant:GGUF quant of equal precision")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    source = resolve(args.model)
    hp = Hyperparameters(prompt_tokens=args.prompt, gen_tokens=args.gen, threads=args.threads).validate()
    rows = []
    for pair in args.pairs.split(","):
        onnx_quant, gguf_quant = pair.split(":")
        onnx_path = export_onnx(source, onnx_quant).path
        gguf_path = export_gguf(source, gguf_quant).path
        sides = {
            "edgeprof_ort": lambda: edgeprof_decode("onnxruntime", onnx_path, hp, args.reps),
            "optimum": lambda: optimum_decode(Path(onnx_path).parent, hp, args.reps),
            "llama.cpp": lambda: edgeprof_decode("llama.cpp", gguf_path, hp, args.reps),
        }
        names = list(sides)
        for name in names:  # warm-up round, discarded
            sides[name]()
        rates: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(args.rounds):
            order = names[round_index % 3:] + names[:round_index % 3]
            for name in order:
                rates[name].append(sides[name]())
            print(f"{pair} round {round_index}: " + ", ".join(f"{n} {rates[n][-1]:.1f}" for n in names),
                  file=sys.stderr, flush=True)
        vs_optimum = [e / o for e, o in zip(rates["edgeprof_ort"], rates["optimum"])]
        vs_llama = [e / l for e, l in zip(rates["edgeprof_ort"], rates["llama.cpp"])]
        rows.append({
            "onnx_quant": onnx_quant, "gguf_quant": gguf_quant,
            "decode_tps_median": {n: statistics.median(v) for n, v in rates.items()},
            "edgeprof_vs_optimum_median": statistics.median(vs_optimum),
            "edgeprof_vs_optimum_per_round": vs_optimum,
            "edgeprof_ort_vs_llama_cpp_median": statistics.median(vs_llama),
            "rates": rates,
        })
    result = {"command": " ".join(sys.argv), "model": args.model, "prompt": args.prompt, "gen": args.gen,
              "threads": args.threads, "rounds": args.rounds, "libraries": library_versions(), "rows": rows}
    print(f"{'pair':<12}{'edgeprof ORT':>14}{'optimum':>10}{'llama.cpp':>11}{'vs optimum':>12}{'vs llama.cpp':>14}")
    for row in rows:
        med = row["decode_tps_median"]
        print(f"{row['onnx_quant'] + ':' + row['gguf_quant']:<12}{med['edgeprof_ort']:>14.1f}{med['optimum']:>10.1f}"
              f"{med['llama.cpp']:>11.1f}{row['edgeprof_vs_optimum_median']:>12.2f}"
              f"{row['edgeprof_ort_vs_llama_cpp_median']:>14.2f}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
