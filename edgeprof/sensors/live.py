"""A live view of a run's sensors, as jtop shows a Jetson: power, temperature, clocks, memory and use,
refreshed in the terminal while the worker measures.

It must not disturb the measurement, so it reads nothing itself: it renders `Sampler.latest()`, the
samples the run's own sampler thread (in the parent) has already taken, whenever rich refreshes the screen
(twice a second). The worker does no extra work, and no sensor is read twice.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.table import Table

from edgeprof.sensors.base import Metric

# (metric kind, heading): the order of the view's rows, what jtop leads with first
KINDS = (("power_w", "power"), ("temp_c", "temperature"), ("clock_mhz", "clock"), ("mem_mb", "memory"),
         ("util_pct", "use"))
_UNITS = {"C": "°C"}


class LiveReadout:
    """A rich renderable: the latest reading of each power, temperature, clock, memory and use metric,
    grouped by kind. Attach it to a sampler once the sensors have started; until then it says so."""

    def __init__(self, title: str = "sensors (live)"):
        self.title = title
        self._latest: Callable[[], dict[str, float]] | None = None
        self._metrics: list[Metric] = []
        self.phase = ""  # where the run is (set by the caller), shown in the caption

    def attach(self, latest: Callable[[], dict[str, float]], metrics: list[Metric]) -> None:
        self._latest = latest
        self._metrics = [m for m in metrics if not _per_core(m)]

    def __rich__(self) -> Table:
        table = Table(title=self.title, title_justify="left", header_style="bold", show_edge=False, pad_edge=False,
                      caption=self.phase or None, caption_justify="left")
        for column in ("", "metric", "now"):
            table.add_column(column, justify="right" if column == "now" else "left")
        if self._latest is None:
            table.add_row("", "waiting for the sensors to start…", "")
            return table
        reading = self._latest()
        for kind, heading in KINDS:
            first = True
            for metric in (m for m in self._metrics if m.kind == kind):
                value = reading.get(metric.name)
                text = "-" if value is None else f"{value:,.1f} {_UNITS.get(metric.unit, metric.unit)}"
                table.add_row(heading if first else "", _name(metric.name), text)
                first = False
        if not any(m.kind in dict(KINDS) for m in self._metrics):
            table.add_row("", "no power, temperature, clock or memory sensor on this host", "")
        return table


def _per_core(metric: Metric) -> bool:
    """Per-core use rows (`process.cpu3.util_pct`) crowd the view; the mean over cores is shown."""
    parts = metric.name.split(".")
    return len(parts) == 3 and parts[0] == "process" and parts[1][:3] == "cpu" and parts[1][3:].isdigit()


def _name(metric: str) -> str:
    """`nvml.gpu0.power_w` -> `nvml gpu0 power`: the unit is in its own column."""
    head, _, last = metric.rpartition(".")
    for suffix in ("_w", "_c", "_mhz", "_mb", "_pct", "_j"):
        last = last.removesuffix(suffix)
    return f"{head}.{last}".strip(".").replace(".", " ").replace("_", " ")
