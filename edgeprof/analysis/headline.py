"""The comparison a report leads with: per model and quantization, each shared workload's figures on every
device with their spreads, the ratio of each device to the first (the edge side), the roofline's prediction
beside the measurement, and one sentence generated from the table.

A column is shown only where some side measured it, so a figure a later record adds (a roof fraction, a
fidelity statistic) reaches the table with one `Column` line in `HEADLINE_COLUMNS`, provided its records
carry it as a numeric metric (`compare.load_run` summarises every one as `<name>_mean`/`_std`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgeprof.analysis.compare import NEAREST_FIELDS, Joined, Run, add_predictions, group_rows, join, settings_of
from edgeprof.config import Hyperparameters


@dataclass(frozen=True)
class Column:
    """One headline figure: `key` names the summary columns `<key>_mean`/`<key>_std`."""

    key: str
    label: str
    higher_is_better: bool
    predicted: str | None = None  # the matching figure of `compare.add_predictions`, where the roofline has one
    fallback: str | None = None  # a second metric for sides without the first (GPU memory, else the worker's RSS)


HEADLINE_COLUMNS = (
    Column("decode_tps", "decode t/s", True, predicted="decode_tps"),
    Column("prefill_tps", "prefill t/s", True),
    Column("ttft_ms", "TTFT ms", False, predicted="ttft_ms"),
    Column("j_per_token_decode", "J/token (decode)", False),
    Column("gpu_mem_used_mb_peak", "peak memory MB", False, fallback="peak_rss_mb"),
)
_MEMORY_SOURCE = {"gpu_mem_used_mb_peak": "GPU", "peak_rss_mb": "RSS"}


@dataclass
class Cell:
    """One side's figure: mean and sample standard deviation over repetitions, what it is where a column
    takes it from one of two metrics, and the roofline's prediction where there is one."""

    mean: float
    std: float
    source: str = ""
    predicted: float | None = None

    @property
    def present(self) -> bool:
        return not math.isnan(self.mean)


@dataclass
class HeadlineRow:
    workload: dict  # batch, prompt_tokens, gen_tokens
    cells: dict[str, list[Cell]]  # column key -> one cell per side
    settings: list[str]  # how each side ran it
    choices: list[int]  # how many execution settings each side measured it under
    basis: str  # why the sides' rows are one workload
    differs: str = ""  # a nearest pairing: the workload settings that differ between the sides, in words

    def ratio(self, key: str, side: int) -> tuple[float, float]:
        """(side / first side, its spread): the relative standard deviations added in quadrature."""
        base, other = self.cells[key][0], self.cells[key][side]
        if not (base.present and other.present) or base.mean == 0:
            return math.nan, math.nan
        value = other.mean / base.mean
        spread = value * math.hypot(_relative(base), _relative(other))
        return value, spread


def _relative(cell: Cell) -> float:
    return 0.0 if cell.mean == 0 or math.isnan(cell.std) else cell.std / abs(cell.mean)


@dataclass
class Headline:
    model: str
    quant: str
    backend: str
    sides: list[str]  # device names, edge first
    emulated: list[bool]
    columns: list[Column]
    rows: list[HeadlineRow]
    lead: int = 0  # the row the sentence speaks of
    sentence: str = ""
    notes: list[str] = field(default_factory=list)


def make_cell(row: dict | None, column: Column, predicted: dict | None) -> Cell:
    """A side's figure for `column`: `<key>_mean`/`_std` of the summary row, or a figure measured once per
    configuration under its own name (fidelity), else its fallback."""
    if row is None:
        return Cell(math.nan, math.nan)
    for key in (column.key, column.fallback):
        if key and not math.isnan(_number(row.get(f"{key}_mean", row.get(key)))):
            return Cell(_number(row.get(f"{key}_mean", row.get(key))), _number(row.get(f"{key}_std")),
                        _MEMORY_SOURCE.get(key, "") if column.fallback else "",
                        (predicted or {}).get(column.predicted) if column.predicted else None)
    return Cell(math.nan, math.nan, predicted=(predicted or {}).get(column.predicted) if column.predicted else None)


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def build_headlines(sides: list[Run], predicted: bool = True, nearest: bool = False) -> list[Headline]:
    """One headline per (model, quantization, backend) that at least two sides ran, rows by workload.
    `nearest` pairs rows of the same artifact, backend, batch and prompt whatever else differs (generated
    tokens, context, KV type), and every such row says what differs."""
    joined = join(sides, NEAREST_FIELDS if nearest else False)
    if predicted:
        add_predictions(joined, sides)
    groups: dict[tuple, list[Joined]] = {}
    for item in joined:
        groups.setdefault((item.identity["model"], item.identity["quant"], item.identity["backend"]), []).append(item)
    headlines = []
    for (model, quant, backend), items in groups.items():
        items.sort(key=lambda i: (i.identity["batch"], i.identity["prompt_tokens"], i.identity["gen_tokens"]))
        rows = []
        for item in items:
            predictions = item.predicted or [None] * len(sides)
            cells = {c.key: [make_cell(row, c, p) for row, p in zip(item.by_run, predictions)] for c in HEADLINE_COLUMNS}
            rows.append(HeadlineRow(
                {k: item.identity[k] for k in ("batch", "prompt_tokens", "gen_tokens")}, cells,
                ["-" if row is None else settings_of(row) for row in item.by_run], item.choices, item.basis,
                _differs(item.by_run, [side.device_name for side in sides]) if nearest else ""))
        columns = [c for c in HEADLINE_COLUMNS if any(cell.present for r in rows for cell in r.cells[c.key])]
        headline = Headline(str(model).removeprefix("synth:"), str(quant), str(backend),
                            [side.device_name for side in sides], [side.emulated for side in sides], columns, rows)
        headline.lead = lead_row(rows)
        headline.sentence = sentence(headline)
        headline.notes = _notes(headline)
        headlines.append(headline)
    models = list(dict.fromkeys(h.model for h in headlines))  # each model's quantizations together
    headlines.sort(key=lambda h: (models.index(h.model), h.quant, h.backend))
    return headlines


_FIELD_WORDS = {"gen_tokens": "generated tokens", "context": "context", "kv_type": "KV type", "sampler": "sampler",
                "batch": "batch", "prompt_tokens": "prompt"}


def _differs(rows: list[dict | None], names: list[str]) -> str:
    """`generated tokens 32 on A, 64 on B`: the workload settings on which paired rows differ."""
    parts = []
    for field_name in Hyperparameters.WORKLOAD:
        if field_name == "context" and not any(r and r.get("context") for r in rows):
            continue  # prompt + generated on every side: follows from what is already said
        values = [(Hyperparameters.from_dict(r).workload().get(field_name), n) for r, n in zip(rows, names) if r]
        if len({v for v, _ in values}) > 1:
            parts.append(f"{_FIELD_WORDS.get(field_name, field_name)} " + ", ".join(f"{v} on {n}" for v, n in values))
    return "; ".join(parts)


def single_device_headlines(side: Run) -> list[Headline]:
    """One headline per model and quantization of a single device (its workloads' fastest rows), for a
    single run's at-a-glance figure."""
    by_model: dict[tuple, list[HeadlineRow]] = {}
    for (rows,) in group_rows([side]):
        row = max(rows, key=lambda r: _number(r.get("decode_tps_mean")) if not math.isnan(
            _number(r.get("decode_tps_mean"))) else -1.0)
        cells = {c.key: [make_cell(row, c, None)] for c in HEADLINE_COLUMNS}
        by_model.setdefault((str(row["model"]).removeprefix("synth:"), str(row["quant"]), str(row["backend"])),
                            []).append(HeadlineRow({k: row[k] for k in ("batch", "prompt_tokens", "gen_tokens")},
                                                   cells, [settings_of(row)], [len(rows)], ""))
    headlines = []
    for (model, quant, backend), rows in by_model.items():
        columns = [c for c in HEADLINE_COLUMNS if any(r.cells[c.key][0].present for r in rows)]
        headlines.append(Headline(model, quant, backend, [side.device_name], [side.emulated], columns, rows,
                                  lead=lead_row(rows)))
    return headlines


def lead_row(rows: list[HeadlineRow]) -> int:
    """The workload a sentence speaks of: batch 1 where measured, the prompt nearest 512 tokens, then the
    one with the most figures on every side."""
    def rank(index: int):
        row = rows[index]
        complete = sum(all(cell.present for cell in cells) for cells in row.cells.values())
        return (row.workload["batch"] != 1, abs(math.log2(max(row.workload["prompt_tokens"], 1) / 512)), -complete)

    return min(range(len(rows)), key=rank)


def format_value(value: float) -> str:
    """Three significant figures, thousands separated: 15,360 · 752 · 8.33 · 0.199."""
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def format_spread(value: float) -> str:
    """A standard deviation to two significant figures: ±0.00029, ±3.7, ±1,362."""
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2g}"


def format_ratio(value: float) -> str:
    """45× · 7.3× · 0.62× · 1/18: a fraction where a figure shrinks by more than half."""
    if math.isnan(value):
        return "-"
    if value >= 10:
        return f"{value:.0f}×"
    if value >= 0.5:
        return f"{value:.2g}×" if value < 1 else f"{value:.1f}×"
    inverse = 1 / value
    return f"1/{inverse:.0f}" if inverse >= 10 else f"1/{inverse:.1f}"


def _times(value: float, faster: str, slower: str) -> str:
    return f"{format_ratio(value)} {faster}" if value >= 1 else f"{format_ratio(1 / value)} {slower}"


def sentence(headline: Headline) -> str:
    """`On llama-3.2-1b q4_k_m (llama.cpp), batch 1, prompt 512, 64 generated: the h200 decodes 45× faster than
    the raspberry-pi-5 at 1/18 of the energy per token.` One clause per later device, from the lead row."""
    row = headline.rows[headline.lead]
    w = row.workload
    generated = f"{w['gen_tokens']} generated" if not row.differs else f"not the same workload ({row.differs})"
    head = (f"On {headline.model} {headline.quant} ({headline.backend}), batch {w['batch']}, prompt "
            f"{w['prompt_tokens']}, {generated}: ")
    base = headline.sides[0]
    clauses = []
    for side in range(1, len(headline.sides)):
        decode, _ = row.ratio("decode_tps", side)
        if math.isnan(decode):
            continue
        parts = [f"the {headline.sides[side]} decodes {_times(decode, 'faster', 'slower')} than the {base}"]
        ttft, _ = row.ratio("ttft_ms", side)
        if not math.isnan(ttft) and ttft > 0:
            parts.append(f"returns its first token {_times(1 / ttft, 'sooner', 'later')}")
        energy = row.cells["j_per_token_decode"]
        ratio, _ = row.ratio("j_per_token_decode", side)
        if not math.isnan(ratio):
            tail = f"at {format_ratio(ratio)} of the energy per token" if ratio < 1 else \
                f"at {format_ratio(ratio)} the energy per token"
        elif energy[side].present or energy[0].present:
            measured = side if energy[side].present else 0
            tail = (f"(energy measured only on the {headline.sides[measured]}: "
                    f"{format_value(energy[measured].mean)} J/token)")
        else:
            tail = ""
        text = ", ".join(parts + ([tail] if tail and not tail.startswith("(") else []))
        clauses.append(f"{text} {tail}" if tail.startswith("(") else text)
    if not clauses:
        return head + "no decode figure on two devices."
    return head + "; ".join(clauses) + "."


def model_summaries(headlines: list[Headline]) -> list[str]:
    """One paragraph per model: the sentence of its lead quantization (q4_k_m where measured, else the one
    with the most shared workloads), then the range of each later device's decode ratio over its other
    quantizations, so ten headlines read as two paragraphs."""
    by_model: dict[tuple, list[Headline]] = {}
    for headline in headlines:
        by_model.setdefault((headline.model, headline.backend, tuple(headline.sides)), []).append(headline)
    paragraphs = []
    for group in by_model.values():
        lead = max(group, key=lambda h: (h.quant == "q4_k_m", len(h.rows)))
        text = lead.sentence
        others = [h for h in group if h is not lead]
        for side in range(1, len(lead.sides)) if others else ():
            ratios = [(h.rows[h.lead].ratio("decode_tps", side)[0], h.quant) for h in others]
            ratios = [(r, q) for r, q in ratios if not math.isnan(r)]
            if not ratios:
                continue
            low, high = min(r for r, _ in ratios), max(r for r, _ in ratios)
            if low >= 1:
                span = f"{_span(low, high)} faster than"
            elif high < 1:
                span = f"{_span(1 / high, 1 / low)} slower than"
            else:
                span = f"between {format_ratio(low)} and {format_ratio(high)} the speed of"
            quants = ", ".join(q for _, q in ratios)
            text += (f" Over its other quantization{'s' if len(ratios) > 1 else ''} ({quants}), each at its own "
                     f"lead workload, the {lead.sides[side]} decodes {span} the {lead.sides[0]}.")
        paragraphs.append(text)
    return paragraphs


def _span(low: float, high: float) -> str:
    low_text, high_text = format_ratio(low), format_ratio(high)
    return high_text if low_text == high_text else f"{low_text.rstrip('×')}–{high_text}"


def _notes(headline: Headline) -> list[str]:
    notes = []
    for name, emulated in zip(headline.sides, headline.emulated):
        if emulated:
            notes.append(f"{name} is emulated on a larger host: its cores and memory are the device's, its memory "
                         "bandwidth, clocks and power are not.")
    if any(max(row.choices) > 1 for row in headline.rows):
        notes.append("Where a device measured a workload more than once (in several runs, or under several "
                     "settings such as threads), the fastest decode is shown, with the settings it ran under.")
    if any("differ" in row.basis for row in headline.rows):
        notes.append("Some workloads joined on model and quantization whose artifact bytes differ between devices.")
    return notes
