"""`edgeprof report RUN...`: one self-contained HTML page (inline CSS, images as data URIs) plus its PNGs and
one CSV of every configuration per device.

Runs made on the same kind of machine are one side (`compare.merge_by_device`), edge devices first. With
two or more sides the page leads with the comparison: one generated sentence per model and quantization,
an at-a-glance figure and table (decode and prefill t/s, TTFT, J/token, peak memory, each device's ratio
to the first, spreads, the roofline's prediction beside the measurement, emulated sides marked), then
every shared workload. One side (a single `edgeprof run`) gets its own page: the run's table, its
sweeps, the power and temperature trace and the operator shares. Figures are drawn only from data the
runs hold; a missing sensor leaves a note. Raw tables go last, collapsed, and the run ids appear only there.

To show a figure a later record field adds: a `Column` in `headline.HEADLINE_COLUMNS` (the tables and the
at-a-glance figure), a `(setting, metric, unit, fixed)` line in `figures.SWEEPS`, or an entry in `FIGURES`.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from edgeprof.analysis import figures
from edgeprof.analysis.compare import Run, load_run, merge_by_device, settings_of
from edgeprof.analysis.headline import (HEADLINE_COLUMNS, Headline, build_headlines, format_ratio, format_spread,
                                        format_value, model_summaries, single_device_headlines)
from edgeprof.analysis.pareto import pareto_figure, pareto_rows, points_from_rows
from edgeprof.analysis.sustain_plot import sustained_figure
from edgeprof.results.formats import to_csv
from edgeprof.analysis.op_shares import share_rows

_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1150px;
color:#222;line-height:1.4;padding:0 1rem}h1{font-size:1.6rem;margin-bottom:.2rem}.sub{color:#666;margin-top:0}
h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}h3{font-size:1rem;margin:1.4rem 0 .3rem}
ul.lead{font-size:1.02rem;padding-left:1.2rem}ul.lead li{margin:.35rem 0}figure{margin:1rem 0}img{max-width:100%}
table{border-collapse:collapse;font-size:.8rem;margin:.4rem 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right;
vertical-align:top}th{background:#f4f4f4}td.l,th.l{text-align:left}tr.ratio td{background:#f2f7fc;font-weight:600}
tr.first td{border-top:2px solid #bbb}.sd{color:#888;font-size:.72rem}.pred{color:#6a51a3;font-size:.72rem}
.em{color:#b35806;font-weight:600}.note{color:#666;font-style:italic}.swatch{display:inline-block;width:.8em;height:.8em;
margin-right:.3em;vertical-align:-.05em}details{margin:.6rem 0}summary{cursor:pointer;color:#245}
.settings{color:#666;font-size:.72rem;text-align:left;max-width:16rem}table.cmp td{white-space:nowrap}
table.cmp td.settings,table.cmp td.l{white-space:normal}"""

FIGURES = (  # (file name, section title, figure maker on (sides, headlines)): a later figure is one more line
    ("overview", "At a glance", lambda sides, headlines: figures.overview(
        headlines, sides, "Each model and quantization on " + " and ".join(s.device_name for s in sides))),
)


def write_report(run_paths: list[Path], out: Path) -> Path:
    """Write out/report.html, out/<figure>.png and out/<device>.csv; return the HTML path."""
    runs = [load_run(path) for path in run_paths]
    sides = merge_by_device(runs)
    out.mkdir(parents=True, exist_ok=True)
    headlines = build_headlines(sides) if len(sides) > 1 else []
    nearest = len(sides) > 1 and not headlines
    if nearest:  # nothing ran identically on two devices: the nearest pairs, each saying what differs
        headlines = build_headlines(sides, nearest=True)
    page = _Page(out, sides)
    title = report_title(sides)
    models = sorted({figures.short_model(r).split(" ")[0] for side in sides for r in side.rows})
    page.add(f"<h1>{html.escape(title)}</h1><p class='sub'>{html.escape(', '.join(models))} · "
             f"{len(runs)} run{'s' if len(runs) != 1 else ''} · {_legend(sides)}</p>")
    if headlines:
        if nearest:
            page.add("<p class='note'>No workload ran identically on these devices. Below, runs of the same model "
                     "file, batch and prompt length are set side by side anyway, and each says what differs.</p>")
        page.lead(headlines)
    elif len(sides) > 1:
        page.add("<p class='note'>No workload ran on two of these devices (not even the same model file at the "
                 "same batch and prompt length); each device's runs follow.</p>")
        for side in sides:
            page.add(f"<h2>{html.escape(side.device_name)}</h2>" + run_table(side.rows))
    else:
        page.single_run(sides[0] if sides else None, runs)
    for setting, metric, unit, fixed in figures.SWEEPS:
        what = {"decode_tps_mean": "Decode speed", "prefill_tps_mean": "Prefill speed",
                "ttft_ms_mean": "Time to first token"}.get(metric, metric)
        page.figure(f"{metric.removesuffix('_mean').replace('_tps', '').replace('_ms', '')}_vs_{setting}",
                    f"{what} over {figures.SETTING_WORDS[setting].split(' (')[0]}",
                    figures.sweep_lines(sides, setting, metric, unit, fixed), quiet=True)
    page.power()
    page.figure("sustained", "Throughput and temperature over a sustained run", sustained_figure(run_paths), quiet=True)
    fidelity_points = points_from_rows(pareto_rows(runs))
    if fidelity_points:
        page.figure("pareto", "Fidelity against size and speed", pareto_figure(fidelity_points), quiet=True)
    page.op_shares()
    if headlines:
        page.every_workload(headlines)
    page.appendix(runs)
    path = out / "report.html"
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<style>{_CSS}</style></head><body>{''.join(page.parts)}</body></html>")
    return path


def report_title(sides: list[Run]) -> str:
    """`edgeprof: raspberry-pi-5 vs h200`: the devices compared, edge first; one device: what ran on it."""
    if len(sides) == 1:
        models = sorted({str(r["model"]).removeprefix("synth:") for r in sides[0].rows})
        shown = ", ".join(models[:3]) + (f" and {len(models) - 3} more" if len(models) > 3 else "")
        return f"edgeprof: {shown or 'a run'} on {sides[0].device_name}"
    return "edgeprof: " + " vs ".join(side.device_name for side in sides)


def _legend(sides: list[Run]) -> str:
    colors = figures.device_colors(sides)
    return " ".join(f"<span class='swatch' style='background:{colors[s.device_name]}'></span>"
                    f"{html.escape(s.device_name)}" for s in sides)


def _cell(cell, unit_note: bool = False) -> str:
    if not cell.present:
        return "<td>-</td>"
    text = html.escape(format_value(cell.mean))
    if cell.std and not math.isnan(cell.std):
        text += f" <span class='sd'>±{html.escape(format_spread(cell.std))}</span>"
    if cell.source and unit_note:
        text += f" <span class='sd'>{cell.source}</span>"
    if cell.predicted is not None and math.isfinite(cell.predicted):
        text += f"<br><span class='pred'>predicted {html.escape(format_value(cell.predicted))}</span>"
    return f"<td>{text}</td>"


def headline_table(entries: list[tuple[Headline, int]], label_model: bool = False) -> str:
    """Per (headline, workload row): one line per device (mean ± sample std over repetitions, the roofline's
    prediction under it, how the device ran it), then each later device's ratio to the first (± its
    propagated spread). One header for every entry, so the columns line up."""
    columns: list = []
    for headline, _ in entries:
        columns += [c for c in headline.columns if c not in columns]
    columns = [c for c in HEADLINE_COLUMNS if c in columns]
    head = ["model and workload" if label_model else "workload", "device", *[c.label for c in columns], "run with"]
    out = ["<table class='cmp'><tr>" + "".join(
        f"<th class='{'l' if i < 2 or i == len(head) - 1 else ''}'>{html.escape(h)}</th>" for i, h in enumerate(head))
        + "</tr>"]
    for headline, index in entries:
        row = headline.rows[index]
        w = row.workload
        name = f"<b>{html.escape(headline.model)} {html.escape(headline.quant)}</b><br>" if label_model else ""
        where = f"{name}batch {w['batch']}, prompt {w['prompt_tokens']},<br>" + (
            f"{w['gen_tokens']} generated" if not row.differs else
            f"<span class='em'>not the same workload:</span> {html.escape(row.differs)}")
        span = len(headline.sides) * 2 - 1
        for side, device in enumerate(headline.sides):
            device_cell = html.escape(device) + (" <span class='em'>emulated</span>"
                                                 if headline.emulated[side] and "emulated" not in device else "")
            first = f"<td class='l' rowspan='{span}'>{where}</td>" if side == 0 else ""
            more = f" (fastest of {row.choices[side]})" if row.choices[side] > 1 else ""
            out.append(f"<tr class='{'first' if side == 0 else ''}'>{first}<td class='l'>{device_cell}</td>"
                       + "".join(_cell(row.cells[c.key][side], c.fallback is not None) if c.key in row.cells
                                 else "<td>-</td>" for c in columns)
                       + f"<td class='settings'>{html.escape(row.settings[side] + more)}</td></tr>")
        for side in range(1, len(headline.sides)):
            cells = []
            for column in columns:
                value, spread = row.ratio(column.key, side) if column.key in row.cells else (math.nan, math.nan)
                text = format_ratio(value)
                if not math.isnan(spread) and not math.isnan(value) and spread / value >= 0.005:
                    text += f" <span class='sd'>±{spread / value * 100:.0f}%</span>"
                cells.append(f"<td>{text}</td>")
            out.append(f"<tr class='ratio'><td class='l'>{html.escape(headline.sides[side])} ÷ "
                       f"{html.escape(headline.sides[0])}</td>{''.join(cells)}<td class='settings'></td></tr>")
    return "".join(out) + "</table>"


class _Page:
    """The report's HTML parts and PNG files, in reading order."""

    def __init__(self, out: Path, sides: list[Run]):
        self.out = out
        self.sides = sides
        self.parts: list[str] = []

    def add(self, part: str) -> None:
        self.parts.append(part)

    def figure(self, name: str, title: str, fig, note: str = "", quiet: bool = False) -> None:
        """The figure as an inline PNG and out/<name>.png; None leaves a note (or, `quiet`, nothing)."""
        if fig is None:
            if not quiet:
                self.add(f"<h2>{html.escape(title)}</h2><p class='note'>No data for this figure: "
                         f"{html.escape(note)}</p>")
            return
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        (self.out / f"{name}.png").write_bytes(buffer.getvalue())
        plt.close(fig)
        data = base64.b64encode(buffer.getvalue()).decode()
        self.add(f"<h2>{html.escape(title)}</h2><figure><img alt='{html.escape(name)}' title='{html.escape(title)}' "
                 f"src='data:image/png;base64,{data}'></figure>")

    def lead(self, headlines: list[Headline]) -> None:
        sentences = "".join(f"<li>{html.escape(text)}</li>" for text in model_summaries(headlines))
        self.add(f"<ul class='lead'>{sentences}</ul>")
        notes = sorted({note for h in headlines for note in h.notes})
        if notes:
            self.add("".join(f"<p class='note'>{html.escape(n)}</p>" for n in notes))
        for name, title, make in FIGURES:
            self.figure(name, title, make(self.sides, headlines), "no workload ran on two devices")
        self.add("<h2>Side by side</h2><p>Each model and quantization at the workload its sentence speaks of: "
                 "mean <span class='sd'>± standard deviation over repetitions</span>, "
                 "<span class='pred'>the roofline's prediction</span> where it has one, and each device's ratio "
                 "to the first. Memory is the GPU's where measured, else the worker's peak RSS.</p>")
        self.add(headline_table([(h, h.lead) for h in headlines], label_model=True))

    def every_workload(self, headlines: list[Headline]) -> None:
        many = [h for h in headlines if len(h.rows) > 1]
        if not many:
            return
        self.add("<h2>Every shared workload</h2>")
        for h in many:
            self.add(f"<details {'open' if len(h.rows) <= 4 else ''}><summary><b>{html.escape(h.model)} "
                     f"{html.escape(h.quant)}</b> ({html.escape(h.backend)}): {len(h.rows)} workloads on "
                     f"{' and '.join(html.escape(s) for s in h.sides)}</summary>"
                     f"{headline_table([(h, i) for i in range(len(h.rows))])}</details>")

    def single_run(self, side: Run | None, runs: list[Run]) -> None:
        if side is None:
            self.add("<p class='note'>These runs hold no finished configuration.</p>")
            return
        self.add("<h2>What ran and how fast</h2><p>Mean <span class='sd'>± standard deviation over "
                 "repetitions</span> per configuration; memory is the GPU's where measured, else the worker's "
                 "peak RSS.</p>" + run_table(side.rows))
        headlines = single_device_headlines(side)
        if len(headlines) > 1:  # one model on one device: the table above already says it all
            self.figure("overview", "At a glance", figures.overview(
                headlines, [side], f"Each model and quantization on {side.device_name}"), quiet=True)

    def power(self) -> None:
        shown = False
        for side in self.sides:
            fig = figures.power_trace(side)
            if fig is None and len(self.sides) > 1:
                self.add(f"<p class='note'>No sensor trace for {html.escape(side.device_name)}: its runs recorded "
                         "no samples (sampling off, --sample-hz 0).</p>")
            if fig is not None:
                self.figure(f"power_{_slug(side.device_name)}", f"Power and temperature: {side.device_name}", fig)
                shown = True
        if not shown:
            self.figure("power", "Power and temperature over time", None,
                        "the runs recorded no sensor samples (samples.csv), or sampling was off.")

    def op_shares(self) -> None:
        rows = share_rows(self.sides)
        names = {side.label: side.device_name for side in self.sides}
        for row in rows:
            row["device"] = names.get(row["device"], row["device"])
        self.figure("op_shares", "Where decode time goes (operator shares)", figures.op_shares(rows), quiet=True)

    def appendix(self, runs: list[Run]) -> None:
        """Every configuration of every run, collapsed, and one CSV per device beside the page."""
        parts = ["<h2>Appendix: every configuration</h2>"]
        for side in self.sides:
            slug = _slug(side.device_name)
            (self.out / f"{slug}.csv").write_text(to_csv(side.rows))
            parts.append(f"<details><summary>{html.escape(side.device_name)}: {_plural(len(side.rows), 'configuration')} "
                         f"(<a href='{slug}.csv'>{slug}.csv</a>, every column)</summary>{run_table(side.rows)}</details>")
        listing = "".join(f"<li>{html.escape(run.manifest.get('run_id', run.path.name))} · "
                          f"{html.escape(run.device_name)} · {_plural(len(run.rows), 'configuration')} · "
                          f"{html.escape(str(run.path))}</li>" for run in runs)
        parts.append(f"<details><summary>Runs read ({len(runs)})</summary><ul>{listing}</ul></details>")
        self.add("".join(parts))


def _slug(name: str) -> str:
    """`AMD EPYC 2-core CPU` -> `amd-epyc-2-core-cpu`, for file names."""
    return "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


_RUN_COLUMNS = (("decode_tps", "decode t/s"), ("prefill_tps", "prefill t/s"), ("ttft_ms", "TTFT ms"),
                ("j_per_token_decode", "J/token"), ("power_decode_w_mean", "decode W"), ("temp_c_max", "max °C"))


def run_table(rows: list[dict]) -> str:
    """One line per configuration: model, quantization, workload, how it ran, figures ± std, memory,
    fidelity where measured. What every row shares (one model, one backend, one way of running) is said
    once above the table instead of in every line."""
    present = [(k, label) for k, label in _RUN_COLUMNS if any(figures.finite(r.get(f"{k}_mean")) for r in rows)]
    fidelity = any(r.get("fidelity_top1_agreement") is not None for r in rows)
    describe = {"model": lambda r: str(r["model"]).removeprefix("synth:"), "quant": lambda r: str(r["quant"]),
                "backend": lambda r: str(r["backend"]),
                "batch / prompt / gen": lambda r: f"{r['batch']} / {r['prompt_tokens']} / {r['gen_tokens']}",
                "run with": settings_of}
    shared = {name: describe[name](rows[0]) for name in ("model", "quant", "backend", "run with")
              if len(rows) > 1 and len({describe[name](r) for r in rows}) == 1}
    columns = [name for name in describe if name not in shared]
    head = [*columns, *[label for _, label in present], "peak MB"] + (["top-1 / KL vs parent"] if fidelity else [])
    caption = ("<p class='sub'>Every configuration: " + html.escape(" · ".join(v for v in shared.values())) + "</p>") if shared else ""
    out = [caption + "<table><tr>" + "".join(f"<th class='{'l' if h in describe else ''}'>{html.escape(h)}</th>"
                                             for h in head) + "</tr>"]
    for row in sorted(rows, key=lambda r: (str(r["model"]), str(r["quant"]), str(r["backend"]), r["batch"],
                                           r["prompt_tokens"], r["gen_tokens"])):
        html_cells = [f"<td class='{'settings' if name == 'run with' else 'l'}' style='white-space:nowrap'>"
                      f"{html.escape(describe[name](row))}</td>" for name in columns]
        for key, _ in present:
            mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
            text = format_value(mean) if figures.finite(mean) else "-"
            if figures.finite(std) and std:
                text += f" <span class='sd'>±{format_spread(std)}</span>"
            html_cells.append(f"<td style='white-space:nowrap'>{text}</td>")
        gpu, rss = row.get("gpu_mem_used_mb_peak_mean"), row.get("peak_rss_mb_mean")
        memory = f"{format_value(gpu)} <span class='sd'>GPU</span>" if figures.finite(gpu) else (
            f"{format_value(rss)} <span class='sd'>RSS</span>" if figures.finite(rss) else "-")
        html_cells.append(f"<td style='white-space:nowrap'>{memory}</td>")
        if fidelity:
            top1, kl = row.get("fidelity_top1_agreement"), row.get("fidelity_kl_mean")
            html_cells.append(f"<td>{'-' if top1 is None else f'{top1:.2f} / {kl:.3g}'}</td>")
        out.append("<tr>" + "".join(html_cells) + "</tr>")
    return "".join(out) + "</table>"
