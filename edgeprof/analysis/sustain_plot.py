"""Throughput and temperature over a sustained run (`edgeprof run --sustain`), runs side by side.

One column per run directory (an edge device beside a server, say), two rows: decode tokens/s per window
and the hottest sensor per window, one line per configuration. The steady stretch is shaded and the
first throttle marked, by `bench.sustain.summarize` applied to the window series (so a run recorded
under an older rule is drawn by today's); a run without temperature sensors says so in its panel
instead of drawing an empty axis. Reads run directories only (`sustain/<run_key>.csv`, records).
"""

from __future__ import annotations

import math
from pathlib import Path

from edgeprof.bench.sustain import read_rows, summarize
from edgeprof.results.records import read_records
from edgeprof.sensors.throttle import limit_of


def _series(run: Path) -> list[tuple[str, dict, list[dict]]]:
    """(label, the sustained figures, window rows) per configuration that ran sustained."""
    out = []
    seen = set()
    for record in read_records(run / "records.jsonl"):
        metrics = record.get("metrics") or {}
        series = metrics.get("sustain_series")
        if record.get("status") != "ok" or not series or record["run_key"] in seen:
            continue
        seen.add(record["run_key"])
        path = run / series
        if not path.exists():
            continue
        rows = read_rows(path)
        model = str(record["model"].get("name", "?")).removeprefix("synth:")
        hp = record.get("hyperparameters") or {}
        extra = "".join(f" {k[0]}{hp[k]}" for k in ("batch", "depth") if hp.get(k))
        mode = f" {hp['power_mode']}" if hp.get("power_mode") else ""
        out.append((f"{model} {record['model'].get('quant')} {record['backend']}{extra}{mode}",
                    summarize(rows, limit_of), rows))
    return out


def _device(run: Path) -> str:
    import json

    try:
        device = json.loads((run / "manifest.json").read_text()).get("device", {})
    except (OSError, ValueError):
        return run.name
    name = device.get("profile", run.name)
    return f"{name} (emulated)" if device.get("emulated") else name


def _number(value) -> float:
    return value if isinstance(value, float) else math.nan


def sustained_figure(run_paths: list[Path]):
    """A matplotlib Figure of every sustained configuration in `run_paths`, or None when none has one."""
    runs = [(Path(p), _series(Path(p))) for p in run_paths]
    runs = [(path, series) for path, series in runs if series]
    if not runs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(runs), figsize=(5.5 * len(runs) + 1, 6.5), dpi=110, squeeze=False, sharex="col")
    for column, (path, series) in enumerate(runs):
        rate_ax, temp_ax = axes[0][column], axes[1][column]
        any_temp = False
        for label, metrics, rows in series:
            t = [(_number(r["t_start_s"]) + _number(r["t_end_s"])) / 2 / 60 for r in rows]
            line, = rate_ax.plot(t, [_number(r.get("decode_tps")) for r in rows], marker=".", lw=1, label=label)
            temps = [_number(r.get("temp_c_max")) for r in rows]
            if any(not math.isnan(v) for v in temps):
                any_temp = True
                temp_ax.plot(t, temps, color=line.get_color(), marker=".", lw=1)
            steady = metrics.get("sustain_steady_from_s")
            if steady is not None:
                for ax in (rate_ax, temp_ax):
                    ax.axvspan(steady / 60, _number(rows[-1]["t_end_s"]) / 60, color=line.get_color(), alpha=0.08, lw=0)
            throttle = metrics.get("sustain_time_to_throttle_s")
            if throttle is not None:
                for ax in (rate_ax, temp_ax):
                    ax.axvline(throttle / 60, color=line.get_color(), ls="--", lw=0.8)
        rate_ax.set(title=_device(path), ylabel="decode tokens/s (per window)")
        rate_ax.set_ylim(bottom=0)
        rate_ax.legend(fontsize=7, loc="lower left")
        temp_ax.set(xlabel="minutes of sustained generation", ylabel="hottest sensor °C (per window)")
        if not any_temp:
            temp_ax.text(0.5, 0.5, "no temperature sensor readable on this host", ha="center", va="center",
                         transform=temp_ax.transAxes, color="#777")
    fig.suptitle("Sustained generation: throughput and temperature over time "
                 "(shaded: steady state; dashed: first throttle)", fontsize=10)
    fig.tight_layout()
    return fig
