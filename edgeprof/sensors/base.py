"""The sensor protocol: availability with a reason, named metrics with units, and a read.

Metric kinds: `energy_j` is a cumulative counter (wraparound already unfolded by the sensor), `power_w`
an instantaneous power, `temp_c`, `clock_mhz`, `mem_mb`, `util_pct`, and `throttle` (a bitmask, 0 = none).
A metric whose read is expensive (`slow_read_ms`) is read less often than the sampler ticks, so that
sampling stays under 1 % of a core; energy per phase then prefers that domain's power readings.
Energy and power metrics name a *domain* (what they measure: "gpu0", "cpu-package-0", "board", ...) and
a *scope*: "board" domains measure the whole device, "component" domains a part of it.

Every power and energy metric states its *period* (`period_s`): the time over which one reading can be
trusted — the averaging window of a power reading, or how often the value changes, whichever is longer —
and how that period is known (`period_note`: measured on this host, or documented). Energy is only
reported over windows several periods long (see `energy.RESOLVE_PERIODS`); a shorter one is unresolved.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Metric:
    name: str  # unique across sensors, e.g. "nvml.gpu0.power_w"
    unit: str
    kind: str
    domain: str = ""
    scope: str = "component"
    slow_read_ms: float | None = None  # set when a read costs so much that it is taken less often
    period_s: float | None = None  # power/energy: seconds one reading spans (None: as fine as the sampler)
    period_note: str = ""  # how period_s is known: "measured: ..." or "documented: ..."


@dataclass(frozen=True)
class Availability:
    """Whether a sensor can be read here; `reason` says why not (or what was found), `fix` what to do."""

    available: bool
    reason: str = ""
    fix: str = ""

    def describe(self) -> str:
        if self.available:
            return f"available{': ' + self.reason if self.reason else ''}"
        return f"unavailable: {self.reason}" + (f" (fix: {self.fix})" if self.fix else "")


@dataclass
class SensorState:
    """What the registry knows about one sensor after probing it."""

    name: str
    availability: Availability
    metrics: list[Metric] = field(default_factory=list)


class Sensor(Protocol):
    name: str

    def probe(self) -> Availability:
        """Try a real read of everything this sensor offers; remember which metrics work."""

    def metrics(self) -> list[Metric]:
        """Metrics that the last probe found readable."""

    def read(self) -> dict[str, float]:
        """Current values by metric name (a metric that fails this time is simply absent)."""

    def close(self) -> None:
        """Release handles and child processes."""


def read_number(path, scale: float = 1.0) -> float:
    """A number from a sysfs file times `scale`; raises OSError/ValueError like the file does."""
    with open(path) as f:
        return float(f.read().strip()) * scale


def read_text(path) -> str:
    with open(path) as f:
        return f.read().strip()


def measure_change_interval_s(read: Callable[[], float], budget_s: float = 0.35,
                              poll_s: float = 0.002) -> float | None:
    """How often a reading's value changes, polled for at most `budget_s` seconds: the median interval
    between changes, or None when it changed fewer than three times (then it updates more slowly than
    the budget can show). Used at probe time, on an idle device, for power sources whose refresh period
    the hardware does not publish."""
    changes: list[float] = []
    last = read()
    end = time.perf_counter() + budget_s
    while time.perf_counter() < end:
        time.sleep(poll_s)
        value = read()
        if value != last:
            changes.append(time.perf_counter())
            last = value
    gaps = sorted(b - a for a, b in zip(changes, changes[1:]))
    return gaps[len(gaps) // 2] if len(gaps) >= 2 else None
