"""Summary statistics used for every figure (pure numpy, no scipy)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def percentiles_ms(durations_ns: Sequence[int]) -> dict[str, float]:
    """Mean, p50, p90 and p99 of step durations, in milliseconds."""
    if not len(durations_ns):
        return {"mean": math.nan, "p50": math.nan, "p90": math.nan, "p99": math.nan}
    ms = np.asarray(durations_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"mean": float(ms.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; NaN-free inputs expected)."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if not len(arr):
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
