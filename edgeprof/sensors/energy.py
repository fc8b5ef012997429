"""From samples to energy, power, temperature and throttling per phase window.

Each energy or power metric has a period (`Metric.period_s`): how long one reading spans, because the
hardware averages over it or refreshes no faster. A window shorter than `RESOLVE_PERIODS` periods of its
source cannot be resolved: its energy is reported as unresolved with the reason, never as a number.
(Measured on an H100: NVML's averaged power takes 1 s to follow a load step, so a 150 ms decode phase
read from it came out at half its real energy.)

- Each domain (a GPU, a CPU package, a board rail) may have several sources: an energy counter and a
  power reading. The finest source that resolves the window is used.
- A window's energy is its mean power times its length. The mean comes only from readings that lie
  inside the window: a counter's slope between its first and last read inside, or the time-weighted
  mean of power readings taken at least one period after the window opened (earlier ones still average
  in what came before it). Nothing is interpolated across the window's edges, so a steady window sits
  cleanly inside a longer steady stretch; `bench.energy_pass` makes such windows.
- A power source whose readings never change across a window is stale (a dead tegrastats, a fuel gauge
  slower than assumed) and resolves nothing.
- The total avoids double counting: a board-scope domain (Jetson input rail, battery) measures the whole
  device and is used alone; otherwise GPUs, CPU packages and DRAM are summed — with RAPL's platform
  domain (psys) in place of the packages and DRAM where it exists, as it contains them; other rails only
  if nothing else exists (and the note says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from edgeprof.sensors.base import Metric
from edgeprof.sensors.throttle import reason_names

_SUMMED_PREFIXES = ("gpu", "cpu-", "dram-")
RESOLVE_PERIODS = 3
"""A window must span this many periods of its source: one for the lag of an averaging reading, two
more so that the mean rests on more than one independent reading."""


@dataclass(frozen=True)
class Source:
    """One way to measure a domain: a counter or a power reading, with its period (seconds)."""

    metric: str
    kind: str  # "counter" | "power"
    period_s: float
    note: str = ""

    def describe(self) -> str:
        return f"{self.metric} ({self.kind}, period {self.period_s:g} s{'; ' + self.note if self.note else ''})"


@dataclass
class EnergyPlan:
    """Each domain's sources (finest first), which domains make the total, and how."""

    domains: dict[str, list[Source]]
    total: list[str]
    note: str

    @property
    def available(self) -> bool:
        return bool(self.total)

    @property
    def period_s(self) -> float:
        """The coarsest of the total's domains, each at its finest source: what a window must resolve."""
        return max((self.domains[d][0].period_s for d in self.total), default=0.0)

    @property
    def required_window_s(self) -> float:
        return RESOLVE_PERIODS * self.period_s

    def describe(self) -> dict:
        return {"total": self.note, "required_window_s": round(self.required_window_s, 4),
                "sources": {d: [src.describe() for src in self.domains[d]] for d in self.total}}


def plan_energy(metrics: list[Metric], sample_period_s: float = 0.1) -> EnergyPlan:
    """Sources per domain; a source is no finer than the sampler's own period."""
    domains: dict[str, list[Source]] = {}
    scopes: dict[str, str] = {}
    for metric in metrics:
        if metric.kind not in ("energy_j", "power_w"):
            continue
        kind = "counter" if metric.kind == "energy_j" else "power"
        period = max(metric.period_s or 0.0, sample_period_s)
        domains.setdefault(metric.domain, []).append(Source(metric.name, kind, period, metric.period_note))
        scopes[metric.domain] = metric.scope
    for sources in domains.values():
        sources.sort(key=lambda src: (src.period_s, src.kind != "counter"))  # finest first; a tie goes to a counter
    return _choose_total(domains, scopes)


def _choose_total(domains: dict[str, list[Source]], scopes: dict[str, str]) -> EnergyPlan:
    board = [d for d in domains if scopes[d] == "board"]
    if board:
        return EnergyPlan(domains, board[:1], f"board input ({domains[board[0]][0].metric})")
    summed = [d for d in domains if d.startswith(_SUMMED_PREFIXES)]
    if "psys" in domains:  # RAPL's platform domain contains the CPU packages and DRAM: never add them to it
        summed = [d for d in summed if d.startswith("gpu")] + ["psys"]
        return EnergyPlan(domains, summed, " + ".join(domains[d][0].metric for d in summed)
                          + " (psys covers the CPU packages and DRAM; they are not added again)")
    if summed:
        return EnergyPlan(domains, summed, " + ".join(domains[d][0].metric for d in summed))
    if domains:
        return EnergyPlan(domains, list(domains), "sum of component rails (no whole-device measurement)")
    return EnergyPlan({}, [], "no power or energy sensor available")


def series(times: list[float], rows: list[dict[str, float]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(t, row[metric]) for t, row in zip(times, rows) if metric in row and not math.isnan(row[metric])]
    if not pairs:
        return np.empty(0), np.empty(0)
    t, v = zip(*pairs)
    return np.asarray(t), np.asarray(v, dtype=np.float64)


@dataclass
class WindowPower:
    """Mean power over a window, or why it could not be resolved."""

    mean_w: float | None
    sources: list[str] = field(default_factory=list)
    unresolved: str = ""
    samples_w: list[float] = field(default_factory=list)  # total power through the window, for percentiles


class EnergyCalculator:
    """Mean power and energy over windows for the planned total, from readings inside each window."""

    def __init__(self, plan: EnergyPlan, times: list[float], rows: list[dict[str, float]]):
        self.plan = plan
        self._series = {src.metric: series(times, rows, src.metric)
                        for d in plan.total for src in plan.domains[d]}

    def _source_power(self, src: Source, t0: float, t1: float) -> tuple[float, np.ndarray, np.ndarray] | str:
        """(mean watts, times, watts) of one source inside [t0, t1], or the reason it says nothing there."""
        t, v = self._series[src.metric]
        start = t0 if src.kind == "counter" else t0 + src.period_s  # an averaging reading lags by its period
        inside = (t >= start) & (t <= t1)
        ti, vi = t[inside], v[inside]
        reach = 2 * src.period_s  # readings come at least once a period; twice that allows for sampler jitter
        if len(ti) < 2 or ti[0] > start + reach or ti[-1] < t1 - reach:
            return f"{src.metric}'s readings do not cover the window (fewer than two, or a gap at an edge)"
        if src.kind == "counter":
            mean = float((vi[-1] - vi[0]) / (ti[-1] - ti[0]))
            return mean, (ti[:-1] + ti[1:]) / 2, np.diff(vi) / np.diff(ti)
        if np.all(vi == vi[0]):
            return f"{src.metric} never changed inside the window (a stale source)"
        return _time_weighted_mean(ti, vi), ti, vi

    def window_power(self, t0: float, t1: float) -> WindowPower:
        duration = t1 - t0
        if not self.plan.available:
            return WindowPower(None, unresolved=self.plan.note)
        means, curves, used = [], [], []
        for domain in self.plan.total:
            reasons = []
            for src in self.plan.domains[domain]:
                if duration < RESOLVE_PERIODS * src.period_s:
                    reasons.append(f"the {duration:.3g} s window is shorter than {RESOLVE_PERIODS} periods "
                                   f"({src.period_s:g} s) of {src.metric}")
                    continue
                found = self._source_power(src, t0, t1)
                if isinstance(found, str):
                    reasons.append(found)
                    continue
                means.append(found[0])
                curves.append(found[1:])
                used.append(src.metric)
                break
            else:
                return WindowPower(None, unresolved="; ".join(reasons) or f"no source for {domain}")
        mean = sum(means)
        grid = np.unique(np.concatenate([t for t, _ in curves]))
        lo, hi = max(t[0] for t, _ in curves), min(t[-1] for t, _ in curves)
        grid = grid[(grid >= lo) & (grid <= hi)]
        samples = sum(np.interp(grid, t, w) for t, w in curves) if len(grid) else np.empty(0)
        return WindowPower(mean, used, samples_w=list(np.atleast_1d(samples)))

    def energy_j(self, t0: float, t1: float) -> float | None:
        """Joules in [t0, t1] (mean power x length), or None when the window is not resolved."""
        power = self.window_power(t0, t1)
        return None if power.mean_w is None else power.mean_w * (t1 - t0)


_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz


def _time_weighted_mean(t: np.ndarray, w: np.ndarray) -> float:
    if len(t) < 2 or t[-1] <= t[0]:
        return float(np.mean(w))
    return float(_trapezoid(w, t) / (t[-1] - t[0]))


def window_metrics(calc: EnergyCalculator, t0: float, t1: float, prefix: str, tokens: int,
                   idle_power_w: float | None) -> dict:
    """Energy, J/token, power statistics and above-idle energy of one phase window; an unresolved window
    gives `energy_<prefix>_unresolved` with the reason instead of numbers."""
    power = calc.window_power(t0, t1)
    duration = t1 - t0
    if power.mean_w is None:
        return {f"energy_{prefix}_unresolved": power.unresolved}
    energy = power.mean_w * duration
    out: dict = {f"energy_{prefix}_j": energy, f"power_{prefix}_w_mean": power.mean_w,
                 f"energy_{prefix}_window_s": duration}
    if tokens:
        out[f"j_per_token_{prefix}"] = energy / tokens
        out[f"tokens_per_j_{prefix}"] = tokens / energy if energy > 0 else math.nan
    if len(power.samples_w):
        p25, p50, p75 = np.percentile(power.samples_w, [25, 50, 75])
        out.update({f"power_{prefix}_w_p25": float(p25), f"power_{prefix}_w_p50": float(p50),
                    f"power_{prefix}_w_p75": float(p75), f"power_{prefix}_w_peak": float(max(power.samples_w))})
    if idle_power_w is not None:
        above = energy - idle_power_w * duration
        out[f"energy_{prefix}_above_idle_j"] = above
        if tokens:
            out[f"j_per_token_{prefix}_above_idle"] = above / tokens
    return out


def condition_metrics(metrics: list[Metric], times: list[float], rows: list[dict[str, float]],
                      t0: float, t1: float) -> dict:
    """Temperature start/max/end (hottest sensor), throttling seen, mean clocks and peak memory in a window."""
    out: dict = {}
    hottest = None
    for metric in (m for m in metrics if m.kind == "temp_c"):
        t, v = series(times, rows, metric.name)
        if len(t) < 1:
            continue
        inside = v[(t >= t0) & (t <= t1)]
        start, end = float(np.interp(t0, t, v)), float(np.interp(t1, t, v))
        peak = float(max([start, end, *inside.tolist()]))
        if hottest is None or peak > hottest[2]:
            hottest = (metric.name, start, peak, end)
    if hottest:
        out.update({"temp_sensor": hottest[0], "temp_c_start": hottest[1], "temp_c_max": hottest[2],
                    "temp_c_end": hottest[3]})
    reasons: set[str] = set()
    seen_throttle_metric = False
    for metric in (m for m in metrics if m.kind == "throttle"):
        seen_throttle_metric = True
        t, v = series(times, rows, metric.name)
        for mask in v[(t >= t0) & (t <= t1)]:
            reasons.update(reason_names(metric.name, int(mask)))
    if seen_throttle_metric:
        out["throttled"] = bool(reasons)
        out["throttle_reasons"] = sorted(reasons)
    for metric in metrics:
        if metric.kind in ("clock_mhz", "mem_mb") and not metric.name.startswith("process.cpu"):
            t, v = series(times, rows, metric.name)
            if not len(t):
                continue
            inside = v[(t >= t0) & (t <= t1)]
            if not len(inside):  # a window shorter than the sampling interval: the value around its middle
                inside = np.asarray([np.interp((t0 + t1) / 2, t, v)])
            key = metric.name.replace(".", "_")
            out[key + ("_mean" if metric.kind == "clock_mhz" else "_peak")] = float(
                inside.mean() if metric.kind == "clock_mhz" else inside.max())
    gpu_peaks = [v for k, v in out.items() if k.startswith("nvml_gpu") and k.endswith("_mem_used_mb_peak")]
    if gpu_peaks:  # the run's GPUs only (the NVML sensor samples no other), whichever their indices
        out["gpu_mem_used_mb_peak"] = float(sum(gpu_peaks))
    return out
