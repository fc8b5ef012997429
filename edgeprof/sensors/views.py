"""Presentation of sensors: availability and readings tables, and a tegrastats log summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.table import Table

from edgeprof.errors import ModelSpecError
from edgeprof.sensors.base import Metric, SensorState
from edgeprof.sensors.tegrastats import parse_tegrastats_line


def states_table(states: list[SensorState]) -> Table:
    table = Table(title="sensors on this host", header_style="bold")
    table.add_column("sensor")
    table.add_column("state")
    table.add_column("metrics", justify="right")
    for state in states:
        text = state.availability.describe()
        table.add_row(state.name, text if state.availability.available else f"[yellow]{text}[/yellow]",
                      str(len(state.metrics)))
    return table


def readings_table(reading: dict[str, float], metrics: list[Metric]) -> Table:
    table = Table(title="readings", header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for metric in metrics:
        if metric.name.startswith("process.cpu") and metric.name != "process.cpu.util_pct":
            continue  # per-core rows crowd the view; the mean is shown
        value = reading.get(metric.name)
        table.add_row(metric.name, "-" if value is None else f"{value:,.2f}", metric.unit)
    return table


def summarise_tegrastats_log(path: Path, interval_ms: float) -> dict:
    """Board power (mean, p25/p50/p75, peak), energy, temperatures and GPU clocks over a recorded log."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError as exc:
        raise ModelSpecError(f"cannot read {path}: {exc.strerror or exc}") from None
    samples = [parse_tegrastats_line(line) for line in lines]
    power = np.array([s.board_power_mw for s in samples if s.board_power_mw is not None], dtype=float) / 1e3
    if not samples or not any(s.rails_mw or s.ram_total_mb for s in samples):
        raise ModelSpecError(f"{path}: no tegrastats lines found")
    temps: dict[str, float] = {}
    for sample in samples:
        for name, value in sample.temps_c.items():
            temps[name] = max(value, temps.get(name, float("-inf")))
    sources = sorted({s.board_power_source for s in samples if s.board_power_source})
    summary: dict = {"lines": len(samples), "duration_s": len(samples) * interval_ms / 1e3,
                     "board_power_source": sources[0] if len(sources) == 1 else sources,
                     "temp_c_max": temps}
    if len(power):
        p25, p50, p75 = np.percentile(power, [25, 50, 75])
        summary.update({"power_w_mean": float(power.mean()), "power_w_p25": float(p25), "power_w_p50": float(p50),
                        "power_w_p75": float(p75), "power_w_peak": float(power.max()),
                        "energy_j": float(power.sum() * interval_ms / 1e3)})
    else:
        summary["power"] = "unavailable: the log has no power rails"
    gpu = [s.gpu_freq_mhz for s in samples if s.gpu_freq_mhz is not None]
    if gpu:
        summary["gpu_freq_mhz_mean"] = float(np.mean(gpu))
    return summary
