"""Intel/AMD RAPL energy counters through Linux powercap (`/sys/class/powercap/intel-rapl:*`).

Top-level zones are CPU packages; their `dram` sub-zone is memory and is counted separately. A top-level
`psys` zone (laptops since Skylake) measures the whole platform, packages included, so it is its own
domain and the energy total uses it *instead of* the packages and DRAM, never on top of them. The
`core`/`uncore` sub-zones are parts of the package and are skipped so nothing is counted twice.
`energy_uj` wraps at `max_energy_range_uj`; each read unfolds the wrap into a growing total. Since
Linux 5.10 `energy_uj` is readable by root only: that case is reported with the fix.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

from edgeprof.sensors.base import Availability, Metric, read_number, read_text

FIX_PERMISSION = ("run as root, or allow reading once per boot: sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj "
                  "(or a udev rule: SUBSYSTEM==\"powercap\", ACTION==\"add\", RUN+=\"/bin/chmod o+r %S%p/energy_uj\")")
RAPL_UPDATE_S = 1e-3


@dataclass
class _Zone:
    path: Path
    domain: str
    range_uj: float
    last_uj: float | None = None
    wraps: int = 0

    def total_j(self) -> float:
        raw = read_number(self.path / "energy_uj")
        if self.last_uj is not None and raw < self.last_uj:
            self.wraps += 1
        self.last_uj = raw
        return (raw + self.wraps * (self.range_uj + 1)) / 1e6


class RaplSensor:
    name = "rapl"

    def __init__(self, root: str | Path = "/sys/class/powercap"):
        self.root = Path(root)
        self._zones: list[_Zone] = []
        self.read_errors: dict[str, int] = {}  # metric -> failed reads

    def _discover(self) -> list[_Zone]:
        zones = []
        for path in sorted(self.root.glob("intel-rapl:*")):
            parts = path.name.split(":")
            if not (path / "energy_uj").exists():
                continue
            try:
                name = read_text(path / "name")
                range_uj = read_number(path / "max_energy_range_uj")
            except (OSError, ValueError):
                continue
            if len(parts) == 2 and name == "psys":
                domain = "psys"  # the platform (SoC + DRAM + more): it contains the packages, see energy.py
            elif len(parts) == 2:
                domain = f"cpu-{name}"  # e.g. cpu-package-0
            elif name == "dram":
                domain = f"dram-{parts[1]}"
            else:
                continue  # core/uncore are inside the package figure
            zones.append(_Zone(path, domain, range_uj))
        return zones

    def probe(self) -> Availability:
        if not self.root.exists():
            return Availability(False, f"no powercap at {self.root} (not Linux, or no RAPL on this CPU)")
        zones = self._discover()
        if not zones:
            return Availability(False, f"no RAPL zones under {self.root}")
        readable = []
        for zone in zones:
            try:
                zone.total_j()
                readable.append(zone)
            except PermissionError:
                return Availability(False, "energy_uj is readable by root only (Linux >= 5.10)", FIX_PERMISSION)
            except OSError as exc:
                if exc.errno == errno.EACCES:
                    return Availability(False, "energy_uj is readable by root only (Linux >= 5.10)", FIX_PERMISSION)
        self._zones = readable
        if not readable:
            return Availability(False, "RAPL zones exist but none could be read")
        return Availability(True, ", ".join(z.domain for z in readable))

    def metrics(self) -> list[Metric]:
        return [Metric(f"rapl.{z.domain}.energy_j", "J", "energy_j", z.domain, period_s=RAPL_UPDATE_S,
                       period_note="documented: RAPL energy counters update about every 1 ms") for z in self._zones]

    def read(self) -> dict[str, float]:
        values = {}
        for zone in self._zones:
            name = f"rapl.{zone.domain}.energy_j"
            try:
                values[name] = zone.total_j()
            except (OSError, ValueError):
                self.read_errors[name] = self.read_errors.get(name, 0) + 1
        return values

    def close(self) -> None:
        self._zones = []
