"""`edgeprof report RUN...`: one self-contained HTML file (inline CSS, images as data URIs) plus the PNGs.

Figures, each drawn only when the runs hold the data for it (a missing sensor leaves a note, not an
empty or invented chart): decode tok/s vs batch per device (log axes), TTFT vs prompt length, J/token by
device and quantization, power and temperature over time with the phases shaded, operator shares
(measured by `--profile-ops` on llama.cpp or ONNX Runtime, beside the roofline's prediction, hatched),
and peak memory.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict
from pathlib import Path

from edgeprof.analysis.compare import Run, disambiguate, load_run
from edgeprof.results.formats import to_markdown

_CSS = """body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
figure{margin:1rem 0}img{max-width:100%}table{border-collapse:collapse;font-size:.8rem}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}.note{color:#777;font-style:italic}"""


def _series_label(run: Run, row: dict, extra: str = "") -> str:
    return f"{run.label} · {str(row['model']).removeprefix('synth:')} {row['quant']}{extra}"


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    return plt, fig, ax


def _lines(runs: list[Run], x: str, y: str, group_extra: str, xlabel: str, ylabel: str, title: str,
           fixed: dict):
    """One line per (run, model, quant, group_extra value) of `y` against `x`, with other fields `fixed`."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        for row in run.rows:
            if any(row.get(k) != v for k, v in fixed.items()) or math.isnan(row.get(y, math.nan)):
                continue
            label = _series_label(run, row, f" {group_extra}={row[group_extra]}" if group_extra else "")
            series[label].append((row[x], row[y]))
    series = {k: sorted(v) for k, v in series.items() if len(v) >= 2}
    if not series:
        return None
    plt, fig, ax = _figure()
    for label, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _bars(labels: list[str], values: list[float], ylabel: str, title: str):
    if not labels:
        return None
    plt, fig, ax = _figure()
    fig.set_size_inches(10, 4 + 0.06 * max(len(label) for label in labels))  # room for the long labels
    ax.bar(range(len(labels)), values, color="#4c78a8")
    ax.set_xticks(range(len(labels)), labels, rotation=75, ha="right", fontsize=6)
    ax.set(ylabel=ylabel, title=title)
    fig.tight_layout()
    return fig


def _energy(runs: list[Run]):
    labels, values = [], []
    for run in runs:
        for row in run.rows:
            value = row.get("j_per_token_decode_mean", math.nan)
            if not math.isnan(value) and row["batch"] == 1:
                labels.append(_series_label(run, row, f" p{row['prompt_tokens']}"))
                values.append(value)
    return _bars(labels, values, "J per decoded token", "Energy per token, batch 1 (where a power sensor exists)")


def _memory(runs: list[Run]):
    labels, values = [], []
    for run in runs:
        for row in run.rows:
            value = row.get("gpu_mem_used_mb_peak_mean", math.nan)
            if math.isnan(value):
                value = row.get("peak_rss_mb_mean", math.nan)
            if not math.isnan(value) and row["batch"] == 1:
                labels.append(_series_label(run, row, f" p{row['prompt_tokens']}"))
                values.append(value)
    return _bars(labels, values, "MB (GPU memory where measured, else peak RSS)", "Peak memory, batch 1")


def _power_trace(run: Run):
    """Power and temperature over time for the first run with a power column, phases shaded."""
    import csv

    path = run.path / "samples.csv"
    if not path.exists():
        return None
    with open(path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    power = next((c for c in rows[0] if c.endswith("power_w")), None)
    temp = next((c for c in rows[0] if c.endswith("temp_c")), None)
    if power is None:
        return None
    plt, fig, ax = _figure()
    t = [float(r["t_s"]) for r in rows]
    ax.plot(t, [float(r[power] or "nan") for r in rows], lw=0.8, label=power)
    colors = {"prefill": "#f58518", "decode": "#54a24b", "warmup": "#bbbbbb", "load": "#e0e0e0",
              "energy-prefill": "#fdd0a2", "energy-decode": "#c7e9c0"}  # the steady energy passes, lighter
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i]["phase"] != rows[start]["phase"]:
            phase = rows[start]["phase"]
            if phase in colors:
                ax.axvspan(t[start], t[i - 1], color=colors[phase], alpha=0.3, lw=0)
            start = i
    ax.set(xlabel="seconds since run start (orange prefill, green decode, light: their steady energy passes; "
                  "grey warm-up/load)", ylabel="W",
           title=f"Power and temperature: {run.label}")
    if temp:
        twin = ax.twinx()
        twin.plot(t, [float(r[temp] or "nan") for r in rows], color="#e45756", lw=0.8)
        twin.set_ylabel("°C", color="#e45756")
    return fig


def _op_shares(runs: list[Run]):
    """Decode shares by operator category: measured (--profile-ops) where a run has them, each beside the
    roofline's prediction for the same configuration on the same device, labelled as such."""
    from edgeprof.analysis.op_shares import series_name, share_rows
    from edgeprof.backends.op_categories import OP_CATEGORIES

    rows = share_rows(runs)[:16]
    if not rows:
        return None
    plt, fig, ax = _figure()
    fig.set_size_inches(10, 5.5)
    bottom = [0.0] * len(rows)
    for category in OP_CATEGORIES:
        values = [row.get(f"decode_{category}") or 0.0 for row in rows]
        ax.bar(range(len(rows)), values, bottom=bottom, label=category, edgecolor="white", linewidth=0.5)
        bottom = [b + v for b, v in zip(bottom, values)]
    for index, row in enumerate(rows):  # predicted bars are hatched: never read as a measurement
        if row["source"] == "predicted":
            ax.bar(index, 1.0, fill=False, hatch="//", edgecolor="#555", linewidth=0)
    ax.set_xticks(range(len(rows)), [series_name(row) for row in rows], rotation=60, ha="right", fontsize=6)
    ax.set(ylabel="share of decode-step time",
           title="Where decode time goes, by operator: measured (--profile-ops) and predicted (roofline, hatched)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def write_report(run_paths: list[Path], out: Path) -> Path:
    """Write out/report.html and out/<figure>.png; return the HTML path."""
    runs = [load_run(path) for path in run_paths]
    disambiguate(runs)
    out.mkdir(parents=True, exist_ok=True)
    figures = [
        ("decode_vs_batch", "Decode throughput vs batch", lambda: _lines(
            runs, "batch", "decode_tps_mean", "prompt_tokens", "batch (sequences)", "decode tokens/s",
            "Decode tok/s vs batch (log axes)", {})),
        ("ttft_vs_prompt", "Time to first token vs prompt length", lambda: _lines(
            runs, "prompt_tokens", "ttft_ms_mean", "", "prompt tokens", "TTFT ms", "TTFT vs prompt length, batch 1",
            {"batch": 1})),
        ("energy", "Energy per token", lambda: _energy(runs)),
        ("power", "Power and temperature over time", lambda: next(
            (fig for fig in (_power_trace(run) for run in runs) if fig is not None), None)),
        ("op_shares", "Operator shares", lambda: _op_shares(runs)),
        ("memory", "Memory", lambda: _memory(runs)),
    ]
    sections = []
    for name, title, make in figures:
        fig = make()
        if fig is None:
            sections.append(f"<h2>{html.escape(title)}</h2><p class='note'>No data for this figure in these runs "
                            "(a sensor, a sweep dimension or a profile was not present).</p>")
            continue
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        fig.savefig(out / f"{name}.png")
        import matplotlib.pyplot as plt

        plt.close(fig)
        data = base64.b64encode(buffer.getvalue()).decode()
        sections.append(f"<h2>{html.escape(title)}</h2><figure><img alt='{name}' "
                        f"src='data:image/png;base64,{data}'></figure>")
    tables = []
    for run in runs:
        device = run.manifest.get("device", {})
        models = sorted({f"{str(r['model']).removeprefix('synth:')} {r['quant']}" for r in run.rows})
        tables.append(f"<h2>{html.escape(run.label)}: {html.escape(', '.join(models))}</h2>"
                      f"<p>{html.escape(str(device.get('host', {}).get('cpu_model', '')))}; "
                      f"{len(run.rows)} configurations; run {html.escape(run.manifest.get('run_id', run.path.name))}"
                      f"</p>" + _html_table(run.rows))
    title = report_title(runs)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            + "".join(sections) + "".join(tables) + "</body></html>")
    path = out / "report.html"
    path.write_text(page)
    return path


def report_title(runs: list[Run]) -> str:
    """`edgeprof: jetson-orin-nano-8gb vs h100-sxm`: the devices compared (a run's id only where two runs
    share a device)."""
    devices = []
    for run in runs:
        if run.label not in devices:
            devices.append(run.label)
    return "edgeprof: " + " vs ".join(devices)


def _html_table(rows: list[dict]) -> str:
    markdown = to_markdown(rows).strip().splitlines()
    header = [c.strip() for c in markdown[0].strip("|").split("|")]
    body = ["<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|")) + "</tr>"
            for line in markdown[2:]]
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(body) + "</table>"
