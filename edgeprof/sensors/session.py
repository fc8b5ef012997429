"""Sensors for one run: probe, sample in the background, baseline idle power, and per-phase figures.

The runner calls `start()` once (which also measures the idle baseline, over a window the sensors can
resolve), points the process sensor at each worker, and after each configuration asks for each
repetition's figures and appends that configuration's samples to samples.csv with a phase label per row.
Energy comes from the energy pass's steady windows where the worker ran one (`bench.energy_pass`), else
from the timed phases, and is reported unresolved where the window is too short for the sensors.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from edgeprof.sensors.base import Metric, Sensor, SensorState
from edgeprof.sensors.energy import EnergyCalculator, condition_metrics, plan_energy, window_metrics
from edgeprof.sensors.process import ProcessSensor
from edgeprof.sensors.sampler import Sampler


KEEP_AFTER_FLUSH = 2  # samples kept across a flush: a window just after it still has a reading before it


class SensorSession:
    def __init__(self, sensors: list[Sensor], states: list[SensorState], hz: float = 10.0, idle_s: float = 3.0,
                 samples_path: Path | None = None):
        self.sensors = sensors
        self.states = states
        self.hz = hz
        self.idle_s = idle_s
        self.samples_path = samples_path
        self.metrics: list[Metric] = [m for s in sensors for m in s.metrics()]
        self.plan = plan_energy(self.metrics, 1.0 / hz)
        self.sampler = Sampler(sensors, hz)
        self.idle_power_w: float | None = None
        self.idle_unresolved = ""
        self.run_start = 0.0
        self._written = 0
        self._phases: list[tuple[str, str, float, float]] = []  # (run_key, phase, t0, t1)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.run_start = time.perf_counter()
        self.sampler.start()
        if self.idle_s > 0:
            idle_s = max(self.idle_s, self.plan.required_window_s) if self.plan.available else self.idle_s
            t0 = time.perf_counter()
            time.sleep(idle_s)
            t1 = time.perf_counter()
            self.sampler.sample_now()  # a sample after the window's end, so the window is covered
            self._phases.append(("", "idle", t0, t1))
            idle = self._calculator().window_power(t0, t1)
            self.idle_power_w, self.idle_unresolved = idle.mean_w, idle.unresolved
        if self.samples_path is not None:
            with open(self.samples_path, "w", newline="") as f:
                csv.writer(f).writerow(["t_s", "run_key", "phase", *(m.name for m in self.metrics)])
            self.flush_samples("")

    def close(self) -> None:
        self.sampler.stop()
        self.flush_samples("")
        for sensor in self.sensors:
            sensor.close()

    def set_target(self, pid: int | None) -> None:
        for sensor in self.sensors:
            if isinstance(sensor, ProcessSensor):
                sensor.set_target(pid)

    # -- figures ---------------------------------------------------------------------------------
    def _calculator(self) -> EnergyCalculator:
        times, rows = self.sampler.snapshot()
        return EnergyCalculator(self.plan, times, rows)

    def mark(self, run_key: str, phase: str, t0: float, t1: float) -> None:
        self._phases.append((run_key, phase, t0, t1))

    def repetition_metrics(self, windows: dict[str, tuple[float, float]], tokens: dict[str, int],
                           requests: int = 1, energy_windows: dict[str, tuple[float, float, int]] | None = None) -> dict:
        """Energy per phase (prefill, decode) and per request (one sequence of the batch), J/token, power
        percentiles, temperatures, throttling, clocks.

        `windows` are the repetition's timed phases (conditions come from them); `energy_windows`, where
        the worker ran an energy pass, are that phase's steady windows [t0, t1, tokens]. J/token and the
        power figures come from the energy window; `energy_<phase>_j` is this repetition's own tokens at
        that J/token, so per-request energy stays the timed workload's."""
        self.sampler.sample_now()  # make sure a sample lies after the last window's end
        calc = self._calculator()
        times, rows = self.sampler.snapshot()
        out: dict = {}
        for phase, (t0, t1) in windows.items() if self.plan.available else ():
            e0, e1, e_tokens = (energy_windows or {}).get(phase) or (t0, t1, tokens.get(phase, 0))
            figures = window_metrics(calc, e0, e1, phase, e_tokens, self.idle_power_w)
            if f"j_per_token_{phase}" in figures:
                own = tokens.get(phase, 0)
                figures[f"energy_{phase}_j"] = figures[f"j_per_token_{phase}"] * own
                figures[f"energy_{phase}_window_tokens"] = e_tokens
                if f"j_per_token_{phase}_above_idle" in figures:
                    figures[f"energy_{phase}_above_idle_j"] = figures[f"j_per_token_{phase}_above_idle"] * own
            out.update(figures)
        if "energy_prefill_j" in out and "energy_decode_j" in out and requests:
            out["energy_per_request_j"] = (out["energy_prefill_j"] + out["energy_decode_j"]) / requests
        t0 = min(w[0] for w in windows.values())
        t1 = max(w[1] for w in windows.values())
        out.update(condition_metrics(self.metrics, times, rows, t0, t1))
        if self.idle_power_w is not None and self.plan.available:
            out["idle_power_w"] = self.idle_power_w
        return out

    def describe(self) -> dict:
        """For manifests and records: each sensor's availability and how energy is measured."""
        return {
            "sample_hz": self.hz,
            "energy": self.plan.note if self.plan.available else f"unavailable: {self.plan.note}",
            "energy_plan": self.plan.describe() if self.plan.available else None,
            "idle_power_w": self.idle_power_w,
            **({"idle_power_unresolved": self.idle_unresolved} if self.idle_unresolved and self.plan.available else {}),
            "sensors": {s.name: s.availability.describe() for s in self.states},
            "read_errors": self.read_errors(),
        }

    def read_errors(self) -> dict[str, int]:
        """Failed reads so far: whole sensors (by the sampler) and single metrics (by the sensors)."""
        errors = dict(self.sampler.read_errors)
        for sensor in self.sensors:
            for name, count in getattr(sensor, "read_errors", {}).items():
                errors[f"{sensor.name}:{name}"] = count
        return errors

    def flush_samples(self, run_key: str) -> None:
        """Append rows sampled since the last flush, each labelled with the phase it fell in; then forget
        them (all but the last few), so a long sweep holds only the current configuration's samples in
        memory instead of tens of MB per hour rescanned at every repetition."""
        # one snapshot for both what is written and what counts as written: the sampler thread may append
        # between two snapshots, and a sample counted but not written would never reach samples.csv
        all_times, all_rows = self.sampler.snapshot()
        held = len(all_times)
        if self.samples_path is not None:
            times, rows = all_times[self._written:], all_rows[self._written:]
            names = [m.name for m in self.metrics]
            with open(self.samples_path, "a", newline="") as f:
                writer = csv.writer(f)
                for t, row in zip(times, rows):
                    key, phase = run_key, "between"
                    for phase_key, name, t0, t1 in self._phases:
                        if t0 <= t <= t1:
                            key, phase = phase_key or run_key, name
                    writer.writerow([f"{t - self.run_start:.4f}", key, phase, *(_fmt(row.get(n)) for n in names)])
        drop = max(held - KEEP_AFTER_FLUSH, 0)
        self.sampler.trim(drop)
        self._written = held - drop
        kept_from = self.sampler.snapshot()[0][:1]
        if kept_from:  # phases that ended before what is kept can label nothing any more
            self._phases = [p for p in self._phases if p[3] >= kept_from[0]]


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
