"""Linux thermal zones (`/sys/class/thermal/thermal_zone*/{type,temp}`, millidegrees Celsius)."""

from __future__ import annotations

from pathlib import Path

from edgeprof.sensors.base import Availability, Metric, read_number, read_text

_IMPLAUSIBLE_C = -200.0  # some drivers report -273 or -256 for a sensor that is off


class ThermalZonesSensor:
    name = "thermal"

    def __init__(self, root: str | Path = "/sys/class/thermal"):
        self.root = Path(root)
        self._zones: dict[str, Path] = {}

    def probe(self) -> Availability:
        zones: dict[str, Path] = {}
        for path in sorted(self.root.glob("thermal_zone*"), key=lambda p: int(p.name[12:] or 0)):
            try:
                kind = read_text(path / "type") or path.name
                if read_number(path / "temp", 1e-3) <= _IMPLAUSIBLE_C:
                    continue
            except (OSError, ValueError):
                continue
            name = f"thermal.{kind}"
            if name in zones:
                name = f"thermal.{kind}.{path.name[12:]}"
            zones[name] = path / "temp"
        self._zones = zones
        if not zones:
            return Availability(False, f"no readable thermal zones under {self.root}")
        return Availability(True, f"{len(zones)} zones")

    def metrics(self) -> list[Metric]:
        return [Metric(f"{name}.temp_c", "C", "temp_c") for name in self._zones]

    def read(self) -> dict[str, float]:
        values = {}
        for name, path in self._zones.items():
            try:
                value = read_number(path, 1e-3)
            except (OSError, ValueError):
                continue
            if value > _IMPLAUSIBLE_C:
                values[f"{name}.temp_c"] = value
        return values

    def close(self) -> None:
        self._zones = {}
