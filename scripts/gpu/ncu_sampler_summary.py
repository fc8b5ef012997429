"""Issue 25: the per-step cost of greedy on the device, from `ncu_sampler_step.py`'s Nsight Compute CSVs.

A decode step with the batched argmax ends in ggml's `argmax_f32`; the kernels between two of them are one
step. Prints each step's GPU time (sum of gpu__time_duration), the argmax's and the logits pad's, and
the kernels the greedy run has that the `none` run has not.

    python scripts/gpu/ncu_sampler_summary.py results/parity/h200/ncu_sampler_greedy.csv.gz \
        results/parity/h200/ncu_sampler_none.csv.gz
"""

from __future__ import annotations

import collections
import csv
import gzip
import io
import statistics
import sys


def kernels(path: str) -> list[tuple[str, float, str]]:
    """(kernel name, GPU ns, grid) in launch order."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        lines = [line for line in f.read().splitlines() if line.startswith('"')]
    rows = csv.DictReader(io.StringIO("\n".join(lines)))
    return [(r["Kernel Name"].split("(")[0], float(r["Metric Value"].replace(",", "")), r["Grid Size"]) for r in rows]


def main(greedy_path: str, none_path: str) -> None:
    greedy, none = kernels(greedy_path), kernels(none_path)
    ends = [i for i, (name, _, _) in enumerate(greedy) if name.startswith("argmax")]
    steps = [greedy[a + 1:b + 1] for a, b in zip(ends, ends[1:])]
    total = [sum(ns for _, ns, _ in step) for step in steps]
    argmax = [sum(ns for name, ns, _ in step if name.startswith("argmax")) for step in steps]
    pad = [sum(ns for name, ns, _ in step if name.startswith("pad")) for step in steps]
    grid = next(g for name, _, g in greedy if name.startswith("argmax"))
    print(f"{len(steps)} decode steps of {len(steps[0])} kernels: GPU time {statistics.median(total) / 1e3:.1f} us "
          f"per step (median), argmax_f32 {statistics.median(argmax) / 1e3:.1f} us "
          f"({statistics.median(a / t for a, t in zip(argmax, total)) * 100:.1f} %, grid {grid}), "
          f"pad_f32 {statistics.median(pad) / 1e3:.1f} us")
    counts = collections.Counter(name for name, _, _ in greedy)
    counts.subtract(collections.Counter(name for name, _, _ in none))
    print("kernels only the greedy run launched:", {name: n for name, n in counts.items() if n > 0})


if __name__ == "__main__":
    main(*sys.argv[1:3])
