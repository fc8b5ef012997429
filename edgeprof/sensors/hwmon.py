"""Linux hwmon (`/sys/class/hwmon/hwmon*`): temperatures, power and energy of chips with a driver.

Units in sysfs: temp*_input m°C, power*_input/power*_average µW, energy*_input µJ. INA3221 power
monitors are left to the Jetson sensor, which knows their rails.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgeprof.sensors.base import Availability, Metric, read_number, read_text

_SKIP_CHIPS = {"ina3221"}
_CHANNEL = re.compile(r"^(temp|power|energy)(\d+)_(input|average)$")
_SCALE = {"temp": 1e-3, "power": 1e-6, "energy": 1e-6}
_KIND = {"temp": ("temp_c", "C"), "power": ("power_w", "W"), "energy": ("energy_j", "J")}


class HwmonSensor:
    name = "hwmon"

    def __init__(self, root: str | Path = "/sys/class/hwmon"):
        self.root = Path(root)
        self._channels: dict[str, tuple[Path, float, Metric]] = {}

    def probe(self) -> Availability:
        channels: dict[str, tuple[Path, float, Metric]] = {}
        for chip in sorted(self.root.glob("hwmon*")):
            try:
                chip_name = read_text(chip / "name")
            except OSError:
                continue
            if chip_name in _SKIP_CHIPS:
                continue
            for file in sorted(chip.iterdir()):
                m = _CHANNEL.match(file.name)
                if not m:
                    continue
                prefix, index, flavour = m.groups()
                if prefix == "power" and flavour == "average" and (chip / f"power{index}_input").exists():
                    continue  # prefer the instantaneous reading when both exist
                label_file = chip / f"{prefix}{index}_label"
                label = read_text(label_file) if label_file.exists() else f"{prefix}{index}"
                kind, unit = _KIND[prefix]
                label = re.sub(r"[^\w-]+", "_", label).strip("_")
                name = f"hwmon.{chip_name}.{label}.{kind}"
                if name in channels:
                    name = f"hwmon.{chip_name}-{chip.name}.{label}.{kind}"
                try:
                    read_number(file)
                except (OSError, ValueError):
                    continue
                domain = f"{chip_name}.{label}" if prefix != "temp" else ""
                channels[name] = (file, _SCALE[prefix], Metric(name, unit, kind, domain))
        self._channels = channels
        if not channels:
            return Availability(False, f"no readable hwmon channels under {self.root}")
        return Availability(True, f"{len(channels)} channels")

    def metrics(self) -> list[Metric]:
        return [metric for _, _, metric in self._channels.values()]

    def read(self) -> dict[str, float]:
        values = {}
        for name, (path, scale, _) in self._channels.items():
            try:
                values[name] = read_number(path, scale)
            except (OSError, ValueError):
                continue
        return values

    def close(self) -> None:
        self._channels = {}
