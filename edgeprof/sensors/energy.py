"""From samples to energy, power, temperature and throttling per phase window.

- Counters beat integrated power: a domain with an energy counter uses it; otherwise its power samples
  are integrated with the trapezoid rule. Either way a domain becomes a cumulative-joules series, and a
  window's energy is the series interpolated at the window's edges, so windows need not align with ticks.
- The total avoids double counting: a board-scope domain (Jetson input rail, battery) measures the whole
  device and is used alone; otherwise GPUs, CPU packages and DRAM are summed; other rails only if
  nothing else exists (and the note says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeprof.sensors.base import Metric
from edgeprof.sensors.nvml import throttle_names

_SUMMED_PREFIXES = ("gpu", "cpu-", "dram-")


@dataclass
class EnergyPlan:
    """Which metric gives each domain's energy, which domains make the total, and how."""

    domains: dict[str, tuple[str, str]]  # domain -> (metric name, "counter" | "power")
    total: list[str]
    note: str

    @property
    def available(self) -> bool:
        return bool(self.total)


def plan_energy(metrics: list[Metric]) -> EnergyPlan:
    domains: dict[str, tuple[str, str]] = {}
    scopes: dict[str, str] = {}
    slow: list[str] = []
    powered = {m.domain for m in metrics if m.kind == "power_w"}
    for metric in metrics:
        if metric.kind == "energy_j":
            if metric.slow_read_ms and metric.domain in powered:
                # Read too rarely to resolve short phases: this domain's power readings are integrated instead.
                slow.append(f"{metric.name} costs {metric.slow_read_ms:g} ms a read, so it is sampled slowly")
                continue
            domains[metric.domain] = (metric.name, "counter")
            scopes[metric.domain] = metric.scope
    for metric in metrics:
        if metric.kind == "power_w" and metric.domain not in domains:
            domains[metric.domain] = (metric.name, "power")
            scopes[metric.domain] = metric.scope
    plan = _choose_total(domains, scopes)
    if slow:
        plan.note += " [" + "; ".join(slow) + "]"
    return plan


def _choose_total(domains: dict[str, tuple[str, str]], scopes: dict[str, str]) -> EnergyPlan:
    board = [d for d in domains if scopes[d] == "board"]
    if board:
        return EnergyPlan(domains, board[:1], f"board input ({domains[board[0]][0]})")
    summed = [d for d in domains if d.startswith(_SUMMED_PREFIXES)]
    if summed:
        return EnergyPlan(domains, summed, " + ".join(f"{domains[d][0]} ({domains[d][1]})" for d in summed))
    if domains:
        return EnergyPlan(domains, list(domains), "sum of component rails (no whole-device measurement)")
    return EnergyPlan({}, [], "no power or energy sensor available")


def series(times: list[float], rows: list[dict[str, float]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(t, row[metric]) for t, row in zip(times, rows) if metric in row and not math.isnan(row[metric])]
    if not pairs:
        return np.empty(0), np.empty(0)
    t, v = zip(*pairs)
    return np.asarray(t), np.asarray(v, dtype=np.float64)


def cumulative_joules(t: np.ndarray, v: np.ndarray, source: str) -> np.ndarray:
    """A counter is already cumulative; power is integrated sample to sample (trapezoid)."""
    if source == "counter":
        return v - v[0] if len(v) else v
    if len(v) < 2:
        return np.zeros_like(v)
    return np.concatenate([[0.0], np.cumsum((v[1:] + v[:-1]) / 2 * np.diff(t))])


class EnergyCalculator:
    """Energy and power over arbitrary windows for the planned total."""

    def __init__(self, plan: EnergyPlan, times: list[float], rows: list[dict[str, float]]):
        self.plan = plan
        self._curves = []
        for domain in plan.total:
            metric, source = plan.domains[domain]
            t, v = series(times, rows, metric)
            if len(t) >= 2:
                self._curves.append((t, cumulative_joules(t, v, source)))
        self._times = np.asarray(times)

    def energy_j(self, t0: float, t1: float) -> float | None:
        """Joules in [t0, t1], or None when the samples do not cover the window."""
        if not self._curves:
            return None
        total = 0.0
        for t, joules in self._curves:
            if t0 < t[0] or t1 > t[-1]:
                return None
            total += float(np.interp(t1, t, joules) - np.interp(t0, t, joules))
        return total

    def power_samples_w(self, t0: float, t1: float) -> list[float]:
        """Average power over each sampling interval inside the window (edges included)."""
        inner = self._times[(self._times > t0) & (self._times < t1)]
        edges = np.concatenate([[t0], inner, [t1]])
        powers = []
        for a, b in zip(edges[:-1], edges[1:]):
            if b - a < 1e-6:
                continue
            e = self.energy_j(a, b)
            if e is not None:
                powers.append(e / (b - a))
        return powers


def window_metrics(calc: EnergyCalculator, t0: float, t1: float, prefix: str, tokens: int,
                   idle_power_w: float | None) -> dict[str, float]:
    """Energy, J/token, power statistics and above-idle energy of one phase window."""
    energy = calc.energy_j(t0, t1)
    if energy is None:
        return {}
    duration = t1 - t0
    out = {f"energy_{prefix}_j": energy, f"power_{prefix}_w_mean": energy / duration if duration > 0 else math.nan}
    if tokens:
        out[f"j_per_token_{prefix}"] = energy / tokens
        out[f"tokens_per_j_{prefix}"] = tokens / energy if energy > 0 else math.nan
    powers = calc.power_samples_w(t0, t1)
    if powers:
        p25, p50, p75 = np.percentile(powers, [25, 50, 75])
        out.update({f"power_{prefix}_w_p25": float(p25), f"power_{prefix}_w_p50": float(p50),
                    f"power_{prefix}_w_p75": float(p75), f"power_{prefix}_w_peak": float(max(powers))})
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
            reasons.update(throttle_names(int(mask)))
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
    return out
