"""Issue 13's check 2: llama.cpp's CUDA decode shares (eval-callback windows + CUPTI) against Nsight Compute.

Nsight Compute times every kernel of a *plain* decode step (no eval callback, CUDA graphs as llama.cpp
uses them) with its own replay machinery (`gpu__time_duration.sum`, caches and clocks left as they are).
Its kernels carry no llama.cpp node names, so each plain step's kernel sequence is aligned, by kernel
function name, with the profiled step's sequence from `validate_op_profile.py` (whose kernels carry the
category of the window they ran in); matched kernels take that category. The unmatched kernels' time is
reported: it is what the two graphs do differently (fusions that window boundaries prevent).

    python scripts/gpu/ncu_decode_shares.py --profile op_profile_gpu.json --model synth:llama-3.2-1b \
        --quant q4_k_m --ncu /usr/local/cuda/bin/ncu --out ncu_shares.json
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import io
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

STEPS = 4


def run_plain_steps(model: str, batch: int, prompt: int, threads: int, steps: int) -> None:
    """The process Nsight Compute profiles: prefill and warm-up outside the profiled range, then `steps`
    plain decode steps inside it (cuProfilerStart/Stop, with ncu's --profile-from-start off)."""
    import llama_cpp  # noqa: F401  - before numpy

    from edgeprof.backends.llamacpp.session import LlamaCppSession
    from edgeprof.bench.measure import make_prompts
    from edgeprof.config import Hyperparameters

    hp = Hyperparameters(batch=batch, prompt_tokens=prompt, gen_tokens=steps + 8, threads=threads, gpu_layers=-1,
                         sampler="none")
    session = LlamaCppSession(model, hp)
    session.prefill(make_prompts(hp, session.n_vocab, 0))
    for _ in range(4):
        session.decode_step()
    cuda = ctypes.CDLL("libcuda.so.1")
    cuda.cuProfilerStart()
    for _ in range(steps):
        session.decode_step()
    cuda.cuProfilerStop()
    session.close()


def ncu_kernels(ncu: str, model: str, row: dict, threads: int) -> list[tuple[str, float]]:
    command = [ncu, "--csv", "--metrics", "gpu__time_duration.sum", "--profile-from-start", "off",
               "--cache-control", "none", "--clock-control", "none", "--print-kernel-base", "function",
               sys.executable, __file__, "--run-steps", "--model-path", model, "--batch", str(row["batch"]),
               "--prompt", str(row["prompt"]), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    lines = done.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        raise RuntimeError(f"no ncu table: {done.stdout[-500:]} {done.stderr[-1500:]}")
    kernels = []
    for record in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
        if record["Metric Name"] == "gpu__time_duration.sum":
            value = float(record["Metric Value"].replace(",", ""))
            scale = {"nsecond": 1.0, "usecond": 1e3, "msecond": 1e6}.get(record["Metric Unit"], 1.0)
            kernels.append((record["Kernel Name"], value * scale))
    return kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-steps", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-path")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--profile", type=Path, help="validate_op_profile.py's JSON (GPU, CUPTI)")
    parser.add_argument("--model")
    parser.add_argument("--quant", default="q4_k_m")
    parser.add_argument("--ncu", default="/usr/local/cuda/bin/ncu")
    parser.add_argument("--kernels-from", type=Path, help="reuse the Nsight Compute kernels of an earlier --out "
                        "instead of running ncu (re-comparing a profile recorded before a method change)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.run_steps:
        run_plain_steps(args.model_path, args.batch, args.prompt, args.threads, STEPS)
        return
    import llama_cpp  # noqa: F401

    from edgeprof.backends.llamacpp.cuda_kernels import categorise_by_alignment
    from edgeprof.backends.op_categories import OP_CATEGORIES
    from edgeprof.export.gguf_export import export_gguf
    from edgeprof.models.source import resolve

    profile = json.loads(args.profile.read_text())
    earlier = json.loads(args.kernels_from.read_text())["rows"] if args.kernels_from else None
    model = None if earlier else str(export_gguf(resolve(args.model), args.quant).path)
    rows = []
    for index, row in enumerate(profile["rows"]):
        measured = row["llama.cpp"]
        kernels = earlier[index]["kernels"] if earlier else ncu_kernels(args.ncu, model, row, profile["threads"])
        # session 6 recorded the plain-step kernel times beside the windows' as "plain_cupti"; since then
        # they are the profile's decode figures themselves
        shares = {"measured": measured["decode"]["share"]}
        if "plain_cupti" in row:
            shares = {"windowed": measured["decode"]["share"], "measured": row["plain_cupti"]["share"]}
        per_step = len(kernels) // STEPS
        steps = [kernels[i * per_step:(i + 1) * per_step] for i in range(STEPS)]
        totals, unmatched = zip(*(categorise_by_alignment(step, measured["decode_kernels"]) for step in steps))
        ms = {c: statistics.median(t.get(c, 0.0) for t in totals) / 1e6 for c in OP_CATEGORIES}
        all_ms = sum(ms.values())
        ncu_share = {c: v / all_ms for c, v in ms.items()}
        diffs = {name: {c: 100 * (share.get(c, 0.0) - ncu_share[c]) for c in OP_CATEGORIES}
                 for name, share in shares.items()}
        diff = diffs["measured"]
        result = {"batch": row["batch"], "prompt": row["prompt"], "ncu_kernels_per_step": per_step,
                  "profiled_kernels_per_step": len(measured["decode_kernels"]),
                  "ncu_ms": ms, "ncu_share": ncu_share, "measured_share": shares["measured"],
                  "difference_points": diff,
                  "windowed_difference_points": diffs.get("windowed"),
                  "unmatched_ms": statistics.median(unmatched) / 1e6,
                  "within_5_points": all(abs(v) <= 5.0 for v in diff.values()),
                  "kernels": kernels}
        rows.append(result)
        print(f"b{row['batch']} p{row['prompt']}: " + " ".join(f"{c[:4]} {v:+.1f}" for c, v in diff.items())
              + f" | unmatched {result['unmatched_ms']:.3f} ms of {all_ms:.3f}", flush=True)
    args.out.write_text(json.dumps({"model": args.model, "quant": args.quant, "steps": STEPS, "rows": rows},
                                   indent=1))


if __name__ == "__main__":
    main()
