"""The report's figures (matplotlib, Agg), labelled in words: devices by name and colour, models by name and
quantization, axes by the setting swept. Never a run id: a report compares devices, and the appendix says
which runs it read.

Each function returns a figure, or None where the runs hold no data for it. Speeds that span more than
`LOG_SPAN` between their smallest and largest value get a log axis.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

from edgeprof.analysis.compare import Run
from edgeprof.analysis.headline import Headline
from edgeprof.config import Hyperparameters
from edgeprof.backends.op_categories import OP_CATEGORIES

LOG_SPAN = 20.0  # max/min beyond which a linear axis would flatten the smaller device's bars to nothing
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac")
SETTING_WORDS = {"batch": "batch (sequences)", "prompt_tokens": "prompt tokens", "gen_tokens": "generated tokens",
                 "context": "context tokens", "threads": "CPU threads", "gpu_layers": "GPU layers",
                 "n_ubatch": "micro-batch (tokens)", "n_batch": "logical batch (tokens)", "kv_type": "KV-cache type",
                 "flash_attn": "flash attention", "sampler": "sampler", "provider": "provider", "graph_opt": "graph opt"}
SHORT_WORDS = {"batch": "b", "prompt_tokens": "p", "gen_tokens": "g", "context": "ctx ", "threads": "threads ",
               "gpu_layers": "ngl ", "n_ubatch": "ubatch ", "n_batch": "nbatch ", "kv_type": "kv ",
               "flash_attn": "flash ", "sampler": "sampler ", "provider": "", "graph_opt": "opt "}
# (setting swept, figure, its unit, rows it keeps): the sweeps a report draws as lines where the runs hold one
SWEEPS = (
    ("batch", "decode_tps_mean", "decode tokens/s (all sequences)", {}),
    ("prompt_tokens", "ttft_ms_mean", "time to first token, ms", {"batch": 1}),
    ("threads", "decode_tps_mean", "decode tokens/s", {}),
    ("gpu_layers", "decode_tps_mean", "decode tokens/s", {}),
    ("n_ubatch", "prefill_tps_mean", "prefill tokens/s", {}),
)
_SETTINGS = Hyperparameters.WORKLOAD + Hyperparameters.EXECUTION


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


def device_colors(sides: list[Run]) -> dict[str, str]:
    """One colour per device, the same in every figure."""
    return {side.device_name: PALETTE[i % len(PALETTE)] for i, side in enumerate(sides)}


def short_model(row: dict) -> str:
    return f"{str(row['model']).removeprefix('synth:')} {row['quant']}"


def finite(value) -> bool:
    """A real number, not NaN, infinite, None or a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _log_if_wide(values: list[float]) -> bool:
    positive = [v for v in values if finite(v) and v > 0]
    return len(positive) > 1 and max(positive) / min(positive) > LOG_SPAN


def overview(headlines: list[Headline], sides: list[Run], title: str):
    """Small multiples: one panel per headline figure, one bar group per model and quantization at the
    workload its sentence speaks of, one bar per device (its colour). Horizontal, so names read level."""
    if not headlines:
        return None
    plt = _plt()
    colors = device_colors(sides)
    columns = [c for c in headlines[0].columns]
    for headline in headlines[1:]:
        columns += [c for c in headline.columns if c not in columns]
    labels = []
    for h in headlines:
        w = h.rows[h.lead].workload
        labels.append(f"{h.model} {h.quant}\nbatch {w['batch']}, prompt {w['prompt_tokens']}")
    n = len(labels)
    fig, axes = plt.subplots(1, len(columns), figsize=(min(2.6 * len(columns) + 2.2, 12.5), 2.2 + 0.5 * n * max(
        1, len(sides) / 2)), dpi=110, sharey=True, squeeze=False, layout="constrained")
    height = 0.8 / len(sides)
    for ax, column in zip(axes[0], columns):
        values, missing = [], []
        for s, side in enumerate(sides):
            ys, xs = [], []
            for i, h in enumerate(headlines):
                cells = h.rows[h.lead].cells.get(column.key) if column in h.columns else None
                name = side.device_name
                cell = cells[h.sides.index(name)] if cells and name in h.sides else None
                if cell is not None and cell.present:
                    ys.append(i + (s - (len(sides) - 1) / 2) * height)
                    xs.append(cell.mean)
            values += xs
            if not xs:
                missing.append(side.device_name)
            ax.barh(ys, xs, height=height * 0.92, color=colors[side.device_name], label=side.device_name)
        log = _log_if_wide(values)
        if log:
            _plain_log_axis(ax.xaxis, values)
        better = "higher is better" if column.higher_is_better else "lower is better"
        ax.set_title(f"{column.label}\n({better}{', log scale' if log else ''})")
        if column.fallback:
            ax.set_xlabel("GPU where measured, else worker RSS", fontsize=7)
        if missing:
            ax.set_xlabel("not measured on " + ", ".join(missing), fontsize=7, color="#777", style="italic")
        ax.grid(True, axis="x", which="major", alpha=0.3)
    axes[0][0].set_yticks(range(n), labels)
    axes[0][0].invert_yaxis()
    fig.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=colors[s.device_name]) for s in sides],
               labels=[s.device_name for s in sides], loc="outside lower center", ncol=len(sides), frameon=False)
    fig.suptitle(title, fontsize=11, fontweight="bold")
    return fig


def _plain_log_axis(axis, values: list[float]) -> None:
    """A log axis labelled 20 · 50 · 100 · 1,000 rather than 10¹ · 10²: read as numbers, and on a narrow
    panel the minor labels (2×10¹, 3×10¹ …) would overprint each other."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    positive = [v for v in values if finite(v) and v > 0]
    if axis is axis.axes.xaxis:
        axis.axes.set_xscale("log")
    else:
        axis.axes.set_yscale("log")
    horizontal = axis is axis.axes.xaxis  # a narrow panel's x axis has room for fewer labels than a y axis
    few_decades = max(positive) / min(positive) < (100 if horizontal else 300)
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if few_decades else (1.0,)))
    axis.set_major_formatter(FuncFormatter(
        lambda v, _: f"{v / 1000:g}k" if v >= 10_000 else f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _other_settings(row: dict, setting: str) -> tuple:
    return tuple((k, row.get(k)) for k in _SETTINGS if k != setting)


def sweep_lines(sides: list[Run], setting: str, metric: str, unit: str, fixed: dict):
    """`metric` over the swept `setting` as lines: one panel per model and quantization (small multiples),
    one colour per device, the other settings that differ between lines in the legend. A line needs two
    values of the setting; a repeated point keeps its fastest decode, as the comparison does."""
    series: dict[tuple, dict] = defaultdict(dict)
    for s, side in enumerate(sides):
        for row in side.rows:
            if any(row.get(k) != v for k, v in fixed.items()) or not finite(row.get(metric)):
                continue
            if not finite(row.get(setting)):
                continue
            key = (short_model(row), str(row["backend"]), s, _other_settings(row, setting))
            best = series[key].get(row[setting])
            if best is None or row.get("decode_tps_mean", 0) > best.get("decode_tps_mean", 0):
                series[key][row[setting]] = row
    lines = {k: v for k, v in series.items() if len(v) >= 2}
    if not lines:
        return None
    # a device that measured one value of the setting in a panel with a line is still drawn, as a point or
    # two (more would be another sweep's rows scattered over this one's axis)
    swept = {key[:3] for key in lines}
    points: dict[tuple, list[tuple]] = defaultdict(list)
    for key in series:
        if key[:2] in {k[:2] for k in lines} and key[:3] not in swept:
            points[key[:3]].append(key)
    series = {**lines, **{k: series[k] for keys in points.values() if len(keys) <= 2 for k in keys}}
    panels: dict[tuple, list[tuple]] = defaultdict(list)
    for key in series:
        panels[key[:2]].append(key)
    plt = _plt()
    colors = device_colors(sides)
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1.5, 3.3 * rows + 0.6), dpi=110, squeeze=False)
    styles = ("-", "--", ":", "-.")
    markers = ("o", "s", "^", "D", "v", "P")
    for ax, (panel, keys) in zip(axes.flat, panels.items()):
        # what tells a device's lines apart (prompt length, say); what differs between devices is in the tables
        varying = [k for k in range(len(keys[0][3])) if any(
            len({key[3][k][1] for key in keys if key[2] == side}) > 1 for side in {key[2] for key in keys})]
        values = []
        for index, key in enumerate(sorted(keys, key=lambda k: (k[2], k[3]))):
            points = sorted(series[key].items())
            xs, ys = [p[0] for p in points], [p[1][metric] for p in points]
            values += ys
            detail = ", ".join(f"{SHORT_WORDS.get(key[3][k][0], key[3][k][0] + ' ')}{key[3][k][1]}" for k in varying)
            name = sides[key[2]].device_name + (f" · {detail}" if detail else "")
            others = [k for k in keys if k[2] == key[2]]
            ax.plot(xs, ys, marker=markers[others.index(key) % len(markers)],
                    linestyle=styles[others.index(key) % len(styles)], color=colors[sides[key[2]].device_name],
                    label=name, ms=4)
        if setting in ("batch", "prompt_tokens", "threads", "n_ubatch", "context"):
            ax.set_xscale("log", base=2)
            ticks = sorted({x for key in keys for x in series[key]})
            ax.set_xticks(ticks, [str(int(t)) for t in ticks], fontsize=7)
            ax.minorticks_off()
        if _log_if_wide(values):
            _plain_log_axis(ax.yaxis, values)
        ax.set(xlabel=SETTING_WORDS.get(setting, setting), ylabel=unit, title=f"{panel[0]} ({panel[1]})")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    what = unit.split(",")[0].split(" (")[0]
    fixed_words = "".join(f", {SETTING_WORDS.get(k, k).split(' (')[0]} {v}" for k, v in fixed.items())
    drawn = sorted({key[2] for key in series})
    fig.suptitle(f"{what} vs {SETTING_WORDS.get(setting, setting).split(' (')[0]}{fixed_words}: "
                 + " vs ".join(sides[i].device_name for i in drawn), fontsize=11, fontweight="bold")
    fig.tight_layout()
    return fig


def _column(name: str) -> str:
    """`nvml.gpu0.power_w` -> `GPU 0 power (W)`: a samples.csv column in words."""
    words = name.replace("nvml.gpu", "GPU ").replace("rapl.", "RAPL ").replace("process.", "")
    words = words.replace(".", " ").replace("_", " ")
    for unit, text in ((" power w", " power (W)"), (" temp c", " temperature (°C)"), (" util pct", " use (%)"),
                       (" rss mb", " RSS (MB)")):
        words = words.replace(unit, text)
    return words


def _read_samples(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def trace_source(side: Run) -> tuple[Path, list[dict], list[str], list[str]] | None:
    """The side's samples.csv with the most to show: power columns (else CPU use) and temperatures (else the
    worker's memory)."""
    best = None
    for path in side.paths:
        rows = _read_samples(path / "samples.csv")
        if not rows:
            continue
        names = list(rows[0])
        power = [c for c in names if c.endswith("power_w")][:4]
        temp = [c for c in names if c.endswith("temp_c")][:3]
        score = (bool(power), bool(temp), len(rows))
        if best is None or score > best[0]:
            primary = power or [c for c in names if c == "process.cpu.util_pct"]
            secondary = temp or [c for c in names if c == "process.worker_rss_mb"]
            if primary or secondary:
                best = (score, (path, rows, primary, secondary))
    return best[1] if best else None


_PHASE_COLORS = {"prefill": "#f58518", "decode": "#54a24b", "warmup": "#bbbbbb", "load": "#e0e0e0",
                 "energy-prefill": "#fdd0a2", "energy-decode": "#c7e9c0"}  # the steady energy passes, lighter


def power_trace(side: Run):
    """Power and temperature (or, without those sensors, CPU use and the worker's memory) over the run,
    phases shaded, titled by the device and the models that run measured."""
    found = trace_source(side)
    if found is None:
        return None
    path, rows, primary, secondary = found
    models = sorted({short_model(r) for r in side.rows if r.get("run_id") in (path.name, None)} or
                    {short_model(r) for r in side.rows})
    what = ", ".join(models[:2]) + (f" and {len(models) - 2} more" if len(models) > 2 else "")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=110)
    t = [float(r["t_s"]) for r in rows]

    def points(column: str):
        pairs = [(x, float(r[column])) for x, r in zip(t, rows) if r.get(column) not in (None, "")]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    for index, column in enumerate(primary):
        ax.plot(*points(column), lw=0.8, color=PALETTE[index % len(PALETTE)], label=_column(column))
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i]["phase"] != rows[start]["phase"]:
            if rows[start]["phase"] in _PHASE_COLORS:
                ax.axvspan(t[start], t[i - 1], color=_PHASE_COLORS[rows[start]["phase"]], alpha=0.3, lw=0)
            start = i
    ax.set_xlabel("seconds since the run started   (shaded: orange prefill, green decode, lighter their steady "
                  "energy passes, grey warm-up)", fontsize=8)
    ax.set_xlim(t[0], t[-1])
    ax.set_ylabel("W" if primary and primary[0].endswith("power_w") else "%")
    handles, labels = ax.get_legend_handles_labels()
    if secondary:
        twin = ax.twinx()
        twin.spines["right"].set_visible(True)
        for column in secondary:
            twin.plot(*points(column), lw=0.9, color="#e45756", label=_column(column))
        twin.set_ylabel("°C" if secondary[0].endswith("temp_c") else "MB", color="#e45756")
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.07, 1.0), frameon=False)
    sensed = "power and temperature" if primary and primary[0].endswith("power_w") else \
        "CPU use and worker memory (no power or temperature sensor)"
    ax.set_title(f"{side.device_name}: {sensed} while measuring {what}", fontsize=10, fontweight="bold")
    fig.tight_layout()
    return fig


def op_shares(rows: list[dict]):
    """Decode time by operator category, one horizontal bar per device and configuration: measured
    (--profile-ops) and, hatched, the roofline's prediction for the same configuration and device."""
    rows = rows[:16]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.42 * len(rows)), dpi=110)
    left = [0.0] * len(rows)
    for index, category in enumerate(OP_CATEGORIES):
        values = [row.get(f"decode_{category}") or 0.0 for row in rows]
        ax.barh(range(len(rows)), values, left=left, label=category, color=PALETTE[index % len(PALETTE)],
                edgecolor="white", linewidth=0.5)
        left = [a + v for a, v in zip(left, values)]
    for index, row in enumerate(rows):  # predicted bars are hatched: never read as a measurement
        if row["source"] == "predicted":
            ax.barh(index, 1.0, fill=False, hatch="//", edgecolor="#555", linewidth=0)
    labels = [f"{row['device']} · {row['model']} {row['quant']}\nbatch {row['batch']}, prompt {row['prompt_tokens']}"
              f" · {row['source']}" for row in rows]
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the decode step's time")
    ax.set_title("Where decode time goes, by operator: measured (--profile-ops) and predicted (roofline, hatched)",
                 fontsize=10, fontweight="bold")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return fig
