"""Laptop battery power (`/sys/class/power_supply/BAT*`) while discharging.

On battery, the power drawn from it is the whole machine's draw (board scope). On AC it measures
charging instead, so it is reported only while the status is `Discharging`. `power_now` is µW; where it
is missing, `current_now` (µA) x `voltage_now` (µV) gives the same. The kernel does not publish how
often the fuel gauge refreshes these values (typically every few seconds), so `BATTERY_PERIOD_S` is
assumed, and energy over a window in which the reading never changed is reported unresolved.
"""

from __future__ import annotations

from pathlib import Path

from edgeprof.sensors.base import Availability, Metric, read_number, read_text


BATTERY_PERIOD_S = 5.0


class BatterySensor:
    name = "battery"

    def __init__(self, root: str | Path = "/sys/class/power_supply"):
        self.root = Path(root)
        self._battery: Path | None = None

    def probe(self) -> Availability:
        batteries = sorted(self.root.glob("BAT*"))
        if not batteries:
            return Availability(False, "no battery")
        battery = batteries[0]
        try:
            status = read_text(battery / "status")
        except OSError:
            return Availability(False, f"{battery.name} has no readable status")
        if status != "Discharging":
            return Availability(False, f"{battery.name} is {status.lower()}: battery power measures load only on battery",
                                "unplug the charger for the run")
        self._battery = battery
        if self._power_w() is None:
            self._battery = None
            return Availability(False, f"{battery.name} reports neither power_now nor current_now x voltage_now")
        return Availability(True, battery.name)

    def _power_w(self) -> float | None:
        battery = self._battery
        if battery is None:
            return None
        try:
            return read_number(battery / "power_now", 1e-6)
        except (OSError, ValueError):
            pass
        try:
            return read_number(battery / "current_now", 1e-6) * read_number(battery / "voltage_now", 1e-6)
        except (OSError, ValueError):
            return None

    def metrics(self) -> list[Metric]:
        if not self._battery:
            return []
        return [Metric("battery.power_w", "W", "power_w", "battery", "board", period_s=BATTERY_PERIOD_S,
                       period_note=f"documented: fuel gauges refresh every few seconds; {BATTERY_PERIOD_S:g} s assumed")]

    def read(self) -> dict[str, float]:
        power = self._power_w()
        return {} if power is None else {"battery.power_w": power}

    def close(self) -> None:
        self._battery = None
