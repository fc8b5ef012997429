"""Linux hwmon (`/sys/class/hwmon/hwmon*`): temperatures, power and energy of chips with a driver.

Units in sysfs: temp*_input m°C, power*_input/power*_average µW, energy*_input µJ. INA3221 power
monitors are left to the Jetson sensor, which knows their rails. A power channel's period is its
`power*_average_interval` (ms) where the driver publishes it, else how often its value changes at probe.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from edgeprof.sensors.base import Availability, Metric, measure_change_interval_s, read_number, read_text

_SKIP_CHIPS = {"ina3221"}
_CHANNEL = re.compile(r"^(temp|power|energy)(\d+)_(input|average)$")
_SCALE = {"temp": 1e-3, "power": 1e-6, "energy": 1e-6}
_KIND = {"temp": ("temp_c", "C"), "power": ("power_w", "W"), "energy": ("energy_j", "J")}


class HwmonSensor:
    name = "hwmon"

    def __init__(self, root: str | Path = "/sys/class/hwmon", period_budget_s: float = 0.35):
        self.root = Path(root)
        self._period_budget_s = period_budget_s
        self.read_errors: dict[str, int] = {}  # metric -> failed reads
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
                metric = Metric(name, unit, kind, domain)
                if prefix == "power":
                    metric = self._with_period(metric, file, chip / f"power{index}_average_interval")
                channels[name] = (file, _SCALE[prefix], metric)
        self._channels = channels
        if not channels:
            return Availability(False, f"no readable hwmon channels under {self.root}")
        return Availability(True, f"{len(channels)} channels")

    def _with_period(self, metric: Metric, file: Path, interval_file: Path) -> Metric:
        try:
            interval_s = read_number(interval_file, 1e-3)
            return replace(metric, period_s=interval_s, period_note=f"documented by the driver: {interval_file.name}")
        except (OSError, ValueError):
            pass
        changes = measure_change_interval_s(lambda: read_number(file), self._period_budget_s)
        if changes:
            return replace(metric, period_s=changes, period_note=f"measured: changes every {changes * 1e3:.0f} ms")
        return replace(metric, period_s=1.0, period_note=f"assumed 1 s: the value changed less than 3 times in "
                                                         f"{self._period_budget_s:g} s at probe")

    def metrics(self) -> list[Metric]:
        return [metric for _, _, metric in self._channels.values()]

    def read(self) -> dict[str, float]:
        values = {}
        for name, (path, scale, _) in self._channels.items():
            try:
                values[name] = read_number(path, scale)
            except (OSError, ValueError):
                self.read_errors[name] = self.read_errors.get(name, 0) + 1
        return values

    def close(self) -> None:
        self._channels = {}
