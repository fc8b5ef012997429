"""What users get: `edgeprof run` (a subprocess, default settings) against llama.cpp's own tools.

Every side runs the same GGUF file from the same llama.cpp build, interleaved round by round with the
order rotated each round after a discarded warm-up round, because shared machines drift; the figure
reported is the median over rounds, with the spread (min-max) beside it.

- Batch 1 against `llama-bench`: prefill is its pp<P>; decode is its tg<G> at depth P (`-d P`), the
  context edgeprof decodes at after a P-token prompt.
- Batches against `llama-batched-bench` (`-npp P -ntg G -npl B`): its S_TG (B x G tokens over the
  decode phase) against edgeprof's decode tokens/s at batch B.

edgeprof is run as users run it (`edgeprof run -m FILE.gguf …`, a worker child per configuration,
sensors sampled at the default 10 Hz) with its default sampler (greedy, path chosen by edgeprof) and
with `--sampler none` (no token chosen, as the native tools). Only what runs after the timed
repetitions is switched off to save time (`--energy-window 0 --idle-s 0 --no-fidelity`): the energy
pass, the idle baseline and fidelity never overlap the timed figures.

    python scripts/bench_product_path.py --model synth:llama-3.2-1b --quant q4_k_m --gpu-layers -1 \
        --prompts 512,2048 --batches 1,2,4,8,16,32,64,128 --rounds 3 --out results/parity/h200/product_path_h200.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from native_llama import ensure_tool  # noqa: E402

from edgeprof.export.gguf_export import export_gguf  # noqa: E402
from edgeprof.results.records import read_records  # noqa: E402
from edgeprof.results.rundir import library_versions  # noqa: E402
from edgeprof.models.source import resolve  # noqa: E402


def llama_bench(tool: Path, gguf: Path, args: list[str]) -> float:
    """Mean tokens/s of one llama-bench test (its own warm-up and 5 repetitions)."""
    out = subprocess.run([str(tool), "-m", str(gguf), "-o", "json", *args], capture_output=True, text=True,
                         check=True)
    (entry,) = json.loads(out.stdout)
    return float(entry["avg_ts"])


def batched_bench(tool: Path, gguf: Path, args: list[str]) -> dict[int, float]:
    """S_TG tokens/s by parallel sequences, from llama-batched-bench's JSONL output."""
    out = subprocess.run([str(tool), "-m", str(gguf), "--output-format", "jsonl", *args], capture_output=True,
                         text=True, check=True)
    lines = (out.stdout + out.stderr).splitlines()  # LOG() may write to either, depending on the build
    rows = [json.loads(line) for line in lines if line.startswith("{") and '"speed_tg"' in line]
    return {int(r["pl"]): float(r["speed_tg"]) for r in rows}


def edgeprof_run(gguf: Path, common: list[str], batches: list[int], prompt: int, gen: int, reps: int,
                 extra: list[str]) -> dict[int, dict]:
    """By batch: median decode t/s, prefill t/s and TTFT ms over the repetitions of one `edgeprof run`
    (all batches in one invocation, a worker child per configuration, as a user's `-b 1,16,128` runs), and
    the greedy path the records say ran."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "edgeprof", "run", "-m", str(gguf), "-b", ",".join(map(str, batches)),
               "-p", str(prompt), "-n", str(gen), "-r", str(reps), "-o", tmp, "--energy-window", "0",
               "--idle-s", "0", "--no-fidelity", *common, *extra]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"edgeprof run failed ({done.returncode}): {done.stderr[-2000:]}")
        (run_dir,) = [p for p in Path(tmp).iterdir() if p.is_dir()]
        records = [r for r in read_records(run_dir / "records.jsonl") if r.get("status") == "ok"]
        by_batch: dict[int, dict] = {}
        for batch in batches:
            metrics = [r["metrics"] for r in records if r["hyperparameters"]["batch"] == batch]
            if not metrics:
                raise RuntimeError(f"edgeprof run recorded nothing ok at batch {batch}: {done.stdout[-2000:]}")
            by_batch[batch] = {"decode_tps": statistics.median(m["decode_tps"] for m in metrics),
                               "prefill_tps": statistics.median(m["prefill_tps"] for m in metrics),
                               "ttft_ms": statistics.median(m["ttft_ms"] for m in metrics),
                               "sampling": metrics[0].get("sampling")}
        return by_batch


def summarise(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="synth:llama-3.2-1b")
    parser.add_argument("--quant", default="q4_k_m")
    parser.add_argument("--gpu-layers", type=int, default=0, help="-1 = all layers on the GPU")
    parser.add_argument("--threads", type=int, default=0, help="0 = physical cores (edgeprof's default)")
    parser.add_argument("--prompts", default="512", help="batch-1 prompt lengths against llama-bench")
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--batches", default="", help="batches against llama-batched-bench, e.g. 1,2,4,...,128")
    parser.add_argument("--batched-prompt", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-warmup-round", dest="warmup_round", action="store_false",
                        help="skip the discarded first round (each tool still warms up on its own)")
    parser.add_argument("--sides", default="default,none", help="edgeprof sides: default (greedy, the path "
                                                                "edgeprof chooses), none (--sampler none)")
    parser.add_argument("--bin", type=Path, help="folder with llama-bench and llama-batched-bench (default: "
                                                  "built from the installed llama-cpp-python's source)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    gguf = export_gguf(resolve(args.model), args.quant).path
    bench = args.bin / "llama-bench" if args.bin else ensure_tool("llama-bench")
    batched = args.bin / "llama-batched-bench" if args.bin else ensure_tool("llama-batched-bench")
    native_common = ["-ngl", str(99 if args.gpu_layers < 0 else args.gpu_layers)]
    if args.threads:
        native_common += ["-t", str(args.threads)]
    common = ["-ngl", str(args.gpu_layers)] + (["-t", str(args.threads)] if args.threads else [])
    extras = {"default": [], "none": ["--sampler", "none"]}
    sides = args.sides.split(",")

    # One step per measurement; each round runs every step, in an order rotated round by round.
    steps: list[tuple[str, callable]] = []
    for prompt in [int(p) for p in args.prompts.split(",") if p]:
        key = f"b1_p{prompt}"
        steps.append((f"{key}|native_pp", lambda p=prompt: llama_bench(bench, gguf, native_common + [
            "-p", str(p), "-n", "0", "-r", "3"])))
        steps.append((f"{key}|native_tg", lambda p=prompt: llama_bench(bench, gguf, native_common + [
            "-p", "0", "-n", str(args.gen), "-d", str(p), "-r", "3"])))
        for side in sides:
            steps.append((f"{key}|{side}", lambda p=prompt, s=side: edgeprof_run(
                gguf, common, [1], p, args.gen, args.reps, extras[s])[1]))
    batches = [int(b) for b in args.batches.split(",") if b]
    if batches:
        steps.append(("batched|native", lambda: batched_bench(batched, gguf, native_common + [
            "-c", str(max(batches) * (args.batched_prompt + args.gen)), "-b", "2048", "-ub", "512",
            "-npp", str(args.batched_prompt), "-ntg", str(args.gen), "-npl", ",".join(map(str, batches))])))
        for side in sides:
            steps.append((f"batched|{side}", lambda s=side: edgeprof_run(
                gguf, common, batches, args.batched_prompt, args.gen, 2, extras[s])))

    samples: dict[str, list] = {name: [] for name, _ in steps}
    first = 0 if args.warmup_round else 1
    for round_index in range(first, args.rounds + 1):  # round 0 warms caches and clocks and is discarded
        shift = round_index % len(steps)
        for name, step in steps[shift:] + steps[:shift]:
            started = time.monotonic()
            value = step()
            print(f"round {round_index} {name}: {time.monotonic() - started:.1f} s", flush=True)
            if round_index:
                samples[name].append(value)
        if round_index:  # what is measured so far survives a call that ends early
            write_result(args, gguf, sides, batches, samples)


def write_result(args: argparse.Namespace, gguf: Path, sides: list[str], batches: list[int],
                 samples: dict[str, list]) -> None:
    """Summarise the rounds so far into rows, print the table and write the JSON."""
    rows = []
    for prompt in [int(p) for p in args.prompts.split(",") if p]:
        key = f"b1_p{prompt}"
        pp = summarise(samples[f"{key}|native_pp"])
        tg = summarise(samples[f"{key}|native_tg"])
        for side in sides:
            got = samples[f"{key}|{side}"]
            rows.append({
                "compare": "llama-bench", "batch": 1, "prompt": prompt, "gen": args.gen, "side": side,
                "sampling": got[0]["sampling"],
                "native_pp_tps": pp, "native_tg_tps": tg,
                "decode_tps": summarise([g["decode_tps"] for g in got]),
                "prefill_tps": summarise([g["prefill_tps"] for g in got]),
                "ttft_ms": summarise([g["ttft_ms"] for g in got]),
                "decode_ratio_rounds": [g["decode_tps"] / n for g, n in zip(got, samples[f"{key}|native_tg"])],
                "prefill_ratio_rounds": [g["prefill_tps"] / n for g, n in zip(got, samples[f"{key}|native_pp"])],
            })
    for b in batches:
        native = [s[b] for s in samples["batched|native"]]
        for side in sides:
            got = [by_batch[b] for by_batch in samples[f"batched|{side}"]]
            rows.append({
                "compare": "llama-batched-bench", "batch": b, "prompt": args.batched_prompt, "gen": args.gen,
                "side": side, "sampling": got[0]["sampling"], "native_tg_tps": summarise(native),
                "decode_tps": summarise([g["decode_tps"] for g in got]),
                "decode_ratio_rounds": [g["decode_tps"] / n for g, n in zip(got, native)],
            })
    for r in rows:  # each round's ratio pairs sides measured minutes apart at most; the median is over rounds
        r["decode_ratio"] = statistics.median(r["decode_ratio_rounds"])
        if "prefill_ratio_rounds" in r:
            r["prefill_ratio"] = statistics.median(r["prefill_ratio_rounds"])

    print("\n| vs | batch | prompt | side (path) | native decode t/s | edgeprof decode t/s | decode ratio "
          "| native prefill t/s | edgeprof prefill t/s | prefill ratio | TTFT ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pre = (f"{r['native_pp_tps']['median']:,.0f} | {r['prefill_tps']['median']:,.0f} | "
               f"{r['prefill_ratio']:.3f} | {r['ttft_ms']['median']:.2f}") if "prefill_ratio" in r else "— | — | — | —"
        print(f"| {r['compare']} | {r['batch']} | {r['prompt']} | {r['side']} ({r['sampling']}) | "
              f"{r['native_tg_tps']['median']:,.1f} | {r['decode_tps']['median']:,.1f} "
              f"({r['decode_tps']['min']:,.0f}–{r['decode_tps']['max']:,.0f}) | {r['decode_ratio']:.3f} | {pre} |")
    result = {"command": sys.argv, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "libraries": library_versions(),
              "gguf": str(gguf), "threads": args.threads or "edgeprof default / llama-bench default",
              "rounds": len(samples[next(iter(samples))]), "warmup_round": args.warmup_round, "reps": args.reps,
              "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
