"""Where does greedy sampling cost time on a GPU? Every greedy path of the llama.cpp session, in one process.

Each path runs the same GGUF, batch and lengths, interleaved round by round (rotated order) after a
discarded warm-up, and reports the median prefill ms and decode tokens/s of each, relative to
sampler=none (no logits read, as llama-bench).

    python scripts/gpu/sampler_paths.py --model synth:llama-3.2-1b --quant q4_k_m --batches 1,16,128 \
        --prompt 512 --gen 128 --rounds 3 --out $OUT/sampler_paths.json

This is an investigation script (an in-process shortcut); what users get is measured by
scripts/bench_product_path.py through `edgeprof run`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import llama_cpp  # noqa: F401  - before numpy; see edgeprof.backends.llamacpp.lib.load_llama_cpp

from edgeprof.backends.llamacpp.session import LlamaCppModel, LlamaCppSession
from edgeprof.bench.measure import make_prompts, run_repetition
from edgeprof.config import Hyperparameters
from edgeprof.export.gguf_export import export_gguf
from edgeprof.results.rundir import library_versions
from edgeprof.models.source import resolve


def open_path(model: LlamaCppModel, path: str, hp: Hyperparameters, sampling: str) -> LlamaCppSession:
    if sampling == "none":
        return LlamaCppSession(path, dataclasses.replace(hp, sampler="none"), model=model)
    return LlamaCppSession(path, hp, model=model, sampling=sampling, need_logits=sampling == "host")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="synth:llama-3.2-1b")
    parser.add_argument("--quant", default="q4_k_m")
    parser.add_argument("--batches", default="1,16,128")
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--paths", default="none,device,host")
    parser.add_argument("--gpu-layers", type=int, default=-1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    artifact = export_gguf(resolve(args.model), args.quant)
    weights = LlamaCppModel(str(artifact.path), gpu_layers=args.gpu_layers)
    paths = args.paths.split(",")
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        prompt = args.prompt if batch == 1 else min(args.prompt, 128)
        hp = Hyperparameters(batch=batch, prompt_tokens=prompt, gen_tokens=args.gen, gpu_layers=args.gpu_layers,
                             threads=args.threads)
        sessions = {p: open_path(weights, str(artifact.path), hp, p) for p in paths}
        prompts = make_prompts(hp, weights.n_vocab)
        for session in sessions.values():
            run_repetition(session, prompts, hp)  # warm-up, discarded
        samples = {p: {"prefill_ms": [], "decode_tps": []} for p in paths}
        for round_index in range(args.rounds):
            order = paths[round_index % len(paths):] + paths[:round_index % len(paths)]
            for p in order:
                for _ in range(args.reps):
                    m = run_repetition(sessions[p], prompts, hp)
                    samples[p]["prefill_ms"].append(m.prefill_ms)
                    samples[p]["decode_tps"].append(m.decode_tps)
        base = samples["none"] if "none" in samples else None
        for p in paths:
            row = {"batch": batch, "prompt": prompt, "gen": args.gen, "path": p,
                   "prefill_ms": statistics.median(samples[p]["prefill_ms"]),
                   "decode_tps": statistics.median(samples[p]["decode_tps"]),
                   "sampling": sessions[p].info()["sampling"]}
            if base:
                row["prefill_vs_none"] = row["prefill_ms"] / statistics.median(base["prefill_ms"])
                row["decode_vs_none"] = row["decode_tps"] / statistics.median(base["decode_tps"])
            rows.append(row)
            print(json.dumps(row), flush=True)
        for session in sessions.values():
            session.close()
    weights.free()
    result = {"command": sys.argv, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "libraries": library_versions(),
              "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
