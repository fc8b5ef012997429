"""Sustained runs: one configuration generating back to back for minutes, read as a time series of windows.

A few repetitions say how fast a board starts; a shelf in summer is what it keeps up. `--sustain 10m`
makes the worker, after its timed repetitions, run whole repetitions (depth fill, prompt, `gen_tokens`
decode steps) back to back for that long, closing a window at the end of the first repetition that
makes it at least `window_s` long (windows abut: the load never pauses). The worker reports each
window's edges and tokens, as it reports every other phase; the parent, whose sampler saw the sensors
throughout, gives each window its power, temperatures, clocks and throttle reasons (`window_row`), and
may ask the worker to stop early once throughput and temperature have settled (`SteadyDetector`, a stop
file the worker checks between repetitions). `summarize` turns the windows into the record's figures:
steady state (only where the run settled), the drop from the first minute (to the steady state, or to
the last windows where it never settled, and which), the time to the first throttle and which limit fired.

Steady state is event-based, not a guess of time: the first window from which every later window's
decode rate lies within `STEADY_TOLERANCE` of their median (and, where a temperature is sampled, every
later window's hottest reading within `STEADY_TEMP_C` of each other), over at least `MIN_STEADY_WINDOWS`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeprof.sensors.base import Metric
from edgeprof.sensors.energy import EnergyCalculator, EnergyPlan, condition_metrics, series

STEADY_TOLERANCE = 0.03  # decode rate within ±3 % of the steady median
STEADY_TEMP_C = 1.0  # hottest temperature within this band over the steady windows
MIN_STEADY_WINDOWS = 6  # a steady stretch lasts at least this many windows (a minute at the default 10 s)
END_WINDOWS = 3  # the run's end rate, steady or not, is over its last windows
FIRST_MINUTE_S = 60.0
CLOCK_DROP = 0.05  # clocks 5 % below their first-minute mean, with no flag raised, count as a clock limit


def parse_duration_s(text: str | float) -> float:
    """`10m`, `90s`, `1h`, `1.5m` or a number of seconds; a `ConfigError` (one line) otherwise."""
    from edgeprof.errors import ConfigError

    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        value = str(text).strip().lower()
        scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(value[-1:], None)
        try:
            seconds = float(value[:-1] if scale else value) * (scale or 1.0)
        except ValueError:
            raise ConfigError(f"--sustain takes a duration such as 10m, 90s or 1h, got {text!r}") from None
    if seconds < 0 or math.isnan(seconds):
        raise ConfigError(f"--sustain must be >= 0, got {text!r}")
    return seconds


@dataclass(frozen=True)
class SustainPlan:
    """How long to generate (s), how long each window is at least (s), whether to stop once steady."""

    duration_s: float
    window_s: float = 10.0
    until_steady: bool = False
    stop_file: str = ""  # the parent creates it to end the run early; checked between repetitions

    def to_dict(self) -> dict:
        return asdict(self)


# -- worker side -------------------------------------------------------------------------------------
def run_sustain(repeat: Callable[[], dict], plan: SustainPlan, emit: Callable[[dict], None],
                clock: Callable[[], float] = time.perf_counter,
                should_stop: Callable[[], bool] | None = None) -> int:
    """Call `repeat` back to back (one whole repetition each, returning its prompt/decoded tokens and
    prefill/decode seconds) for `plan.duration_s` or until `should_stop`; emit one event per window.
    Returns the number of windows. Times are `clock`'s (the sampler's perf_counter in real runs)."""
    stop = should_stop or (lambda: bool(plan.stop_file) and Path(plan.stop_file).exists())
    start = t0 = clock()
    index = 0
    totals = _empty_window()
    while True:
        done = repeat()
        for key in totals:
            totals[key] += done[key]
        t1 = clock()
        finished = t1 - start >= plan.duration_s
        stopping = not finished and stop()
        if t1 - t0 >= plan.window_s or finished or stopping:
            emit({"event": "sustain_window", "index": index, "t0": t0, "t1": t1, "since_start_s": t1 - start,
                  **totals, "last": finished or stopping, "stopped_early": stopping})
            index += 1
            t0, totals = t1, _empty_window()
        if finished or stopping:
            return index


def _empty_window() -> dict:
    return {"repetitions": 0, "prompt_tokens": 0, "decoded_tokens": 0, "prefill_s": 0.0, "decode_s": 0.0}


def repetition_totals(metrics) -> dict:
    """The window's share of one `RepetitionMetrics`."""
    return {"repetitions": 1, "prompt_tokens": metrics.prompt_tokens_total, "decoded_tokens": metrics.decoded_tokens_total,
            "prefill_s": metrics.prefill_ms / 1e3, "decode_s": metrics.decode_ms / 1e3}


# -- parent side -------------------------------------------------------------------------------------
def window_figures(metrics: list[Metric], plan: EnergyPlan, times: list[float], rows: list[dict[str, float]],
                   t0: float, t1: float) -> dict:
    """What the sensors saw over one window: mean power of the planned total (or why it is unresolved),
    the hottest temperature, throttle reasons, and each clock's mean (`clock.<metric>`, MHz)."""
    out: dict = {}
    if plan.available:
        power = EnergyCalculator(plan, times, rows).window_power(t0, t1)
        if power.mean_w is not None:
            out["power_w"] = power.mean_w
        else:
            out["power_unresolved"] = power.unresolved
    conditions = condition_metrics(metrics, times, rows, t0, t1)
    for key in ("temp_c_max", "temp_sensor", "throttle_reasons"):
        if key in conditions:
            out[key] = conditions[key]
    for metric in (m for m in metrics if m.kind == "clock_mhz"):
        t, v = series(times, rows, metric.name)
        inside = v[(t >= t0) & (t <= t1)]
        if len(inside):
            out[f"clock.{metric.name}"] = float(inside.mean())
    return out


def window_row(event: dict, start: float, figures: dict) -> dict:
    """One row of the time series: the worker's window (`event`) with the sensors' `figures` over it
    (`power_w` or why it is unresolved, hottest temperature, throttle reasons, mean clocks)."""
    row = {"window": event["index"], "t_start_s": event["t0"] - start, "t_end_s": event["t1"] - start,
           "repetitions": event["repetitions"],
           "decode_tps": event["decoded_tokens"] / event["decode_s"] if event["decode_s"] > 0 else math.nan,
           "prefill_tps": event["prompt_tokens"] / event["prefill_s"] if event["prefill_s"] > 0 else math.nan,
           "decoded_tokens": event["decoded_tokens"]}
    row.update(figures)
    return row


def steady_from(rows: list[dict], tolerance: float = STEADY_TOLERANCE, temp_band_c: float = STEADY_TEMP_C,
                min_windows: int = MIN_STEADY_WINDOWS) -> int | None:
    """Index of the first window from which the run is steady (see the module's docstring), or None."""
    rates = np.array([r["decode_tps"] for r in rows], dtype=float)
    temps = np.array([r.get("temp_c_max", math.nan) for r in rows], dtype=float)
    for k in range(0, len(rows) - min_windows + 1):
        tail = rates[k:]
        if np.isnan(tail).any():
            continue
        median = float(np.median(tail))
        if median <= 0 or np.abs(tail / median - 1).max() > tolerance:
            continue
        hot = temps[k:]
        if not np.isnan(hot).all() and np.nanmax(hot) - np.nanmin(hot) > temp_band_c:
            continue
        return k
    return None


class SteadyDetector:
    """Decides, window by window, when a run asked to stop once steady may stop: the last
    `min_windows` windows are steady by `steady_from`'s rule and none of them rose in temperature."""

    def __init__(self, min_windows: int = MIN_STEADY_WINDOWS):
        self.min_windows = min_windows
        self.rows: list[dict] = []

    def add(self, row: dict) -> bool:
        self.rows.append(row)
        if len(self.rows) < self.min_windows:
            return False
        return steady_from(self.rows[-self.min_windows:], min_windows=self.min_windows) == 0


def summarize(rows: list[dict], limit_of: Callable[[str], str]) -> dict:
    """The record's figures of a sustained run (`sustain_*`): steady state, drop from the first minute,
    time to the first throttle, which limit fired. `limit_of` maps a throttle reason to thermal, power
    or clock."""
    if not rows:
        return {"sustain_windows": 0}
    out: dict = {"sustain_windows": len(rows), "sustain_duration_s": rows[-1]["t_end_s"]}
    first = [r for r in rows if r["t_start_s"] < FIRST_MINUTE_S]
    out["sustain_first_minute_decode_tps"] = _rate(first)
    k = steady_from(rows)
    out["sustain_steady"] = k is not None
    end = rows[-END_WINDOWS:]
    out["sustain_end_decode_tps"] = _rate(end)  # the last windows, steady or not
    if k is not None:  # steady figures only where the run settled: otherwise they would be a guess
        steady = rows[k:]
        out["sustain_steady_from_s"] = rows[k]["t_start_s"]
        out["sustain_steady_decode_tps"] = _rate(steady)
        out["sustain_steady_prefill_tps"] = _mean(steady, "prefill_tps")
        for key in ("power_w", "temp_c_max"):
            value = _mean(steady, key)
            if value is not None:
                out[f"sustain_steady_{key}"] = value
    basis = "steady" if k is not None else "end"
    if out["sustain_first_minute_decode_tps"]:
        out["sustain_drop_pct"] = 100 * (1 - out[f"sustain_{basis}_decode_tps"] / out["sustain_first_minute_decode_tps"])
        out["sustain_drop_basis"] = basis  # from the first minute to the steady state, or to the last windows
    out.update(_throttle(rows, first, limit_of))
    return out


def _throttle(rows: list[dict], first: list[dict], limit_of: Callable[[str], str]) -> dict:
    """When throttling first showed and which limits fired: flagged reasons first; failing those, a clock
    that fell `CLOCK_DROP` below its first-minute mean (a governor or firmware that raises no flag)."""
    fired: dict[str, float] = {}
    for row in rows:
        for reason in row.get("throttle_reasons") or []:
            fired.setdefault(limit_of(reason), row["t_start_s"])
    clocks = sorted({key for r in rows for key in r if key.startswith("clock.")})
    for key in clocks:
        base = _mean(first, key)
        if not base:
            continue
        for row in rows:
            value = row.get(key)
            if value is not None and not math.isnan(value) and value < (1 - CLOCK_DROP) * base:
                fired.setdefault("clock", row["t_start_s"])
                break
    if not fired:
        return {"sustain_throttled": False, "sustain_limit": None, "sustain_time_to_throttle_s": None}
    first_limit = min(fired, key=fired.get)
    return {"sustain_throttled": True, "sustain_limit": first_limit, "sustain_limits": sorted(fired),
            "sustain_time_to_throttle_s": fired[first_limit]}


def _rate(rows: list[dict]) -> float | None:
    """Decode tokens over decode seconds across `rows` (token-weighted, not a mean of rates)."""
    tokens = sum(r["decoded_tokens"] for r in rows)
    seconds = sum(r["decoded_tokens"] / r["decode_tps"] for r in rows if r["decode_tps"] and not math.isnan(r["decode_tps"]))
    return tokens / seconds if seconds > 0 else None


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return float(np.mean(values)) if values else None


class SustainedRun:
    """The parent's side of one configuration's sustained run: the plan it sends the worker, each window
    given the sensors' figures as it arrives (and the early stop, when asked), then the time series in
    `sustain/<run_key>.csv` and the record's `sustain_*` figures."""

    def __init__(self, sensors, run_path: Path, jobs_dir: Path, key: str, duration_s: float, window_s: float,
                 until_steady: bool):
        """`sensors`: the run's `SensorSession` (None when sampling is off)."""
        self.sensors = sensors
        self.key = key
        self.csv_path = run_path / "sustain" / f"{key}.csv"
        stop_file = jobs_dir / f"{key}.stop"
        stop_file.unlink(missing_ok=True)
        needed = sensors.plan.required_window_s if sensors and sensors.plan.available else 0.0
        self.plan = SustainPlan(duration_s, max(window_s, needed), until_steady, str(stop_file))
        self.detector = SteadyDetector()
        self.stopped_early = False
        self._start: float | None = None  # the first window's opening, on the sampler's clock

    def _row(self, event: dict, start: float) -> dict:
        figures = {}
        if self.sensors is not None:
            self.sensors.sampler.sample_now()  # a reading after the window's end
            times, rows = self.sensors.sampler.snapshot()
            figures = window_figures(self.sensors.metrics, self.sensors.plan, times, rows, event["t0"], event["t1"])
        return window_row(event, start, figures)

    def on_event(self, event: dict) -> None:
        """A window as it arrives: once steady (when asked to stop then), tell the worker to stop."""
        if event.get("event") != "sustain_window" or not self.plan.until_steady or self.stopped_early:
            return
        if self._start is None:
            self._start = event["t0"]
        if self.detector.add(self._row(event, self._start)):
            Path(self.plan.stop_file).touch()
            self.stopped_early = True

    def finish(self, events: list[dict]) -> dict:
        """Rows for every window, the CSV, and the summary figures for the records."""
        from edgeprof.sensors.throttle import limit_of

        windows = [e for e in events if e["event"] == "sustain_window"]
        Path(self.plan.stop_file).unlink(missing_ok=True)
        if not windows:
            return {"sustain_windows": 0}
        start = windows[0]["t0"]
        rows = [self._row(event, start) for event in windows]
        if self.sensors is not None:
            for event in windows:
                self.sensors.mark(self.key, "sustain", event["t0"], event["t1"])
        write_rows(self.csv_path, rows)
        summary = summarize(rows, limit_of)
        summary["sustain_stop"] = "steady" if windows[-1].get("stopped_early") else "time"
        summary["sustain_window_s"] = self.plan.window_s
        summary["sustain_series"] = str(self.csv_path.relative_to(self.csv_path.parent.parent))
        return summary


def write_rows(path: Path, rows: list[dict]) -> None:
    """The time series as CSV (`pandas.read_csv`): one row per window, a column per figure; lists joined by ';'."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([";".join(v) if isinstance(v, list) else ("" if v is None else v)
                             for v in (row.get(c) for c in columns)])


def read_rows(path: Path) -> list[dict]:
    """A `write_rows` CSV back as `window_row` made it: numbers as floats, throttle reasons as a list."""
    import csv

    rows = []
    with open(path) as f:
        for raw in csv.DictReader(f):
            row: dict = {}
            for key, value in raw.items():
                if key in ("temp_sensor", "power_unresolved"):
                    row[key] = value
                elif key == "throttle_reasons":
                    row[key] = [reason for reason in value.split(";") if reason]
                elif value != "":
                    row[key] = float(value)
            rows.append(row)
    return rows
