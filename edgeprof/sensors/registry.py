"""Which sensors exist on this host, probed for real. Roots are parameters so tests use fake trees."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeprof.sensors.base import Availability, Sensor, SensorState
from edgeprof.sensors.battery import BatterySensor
from edgeprof.sensors.hwmon import HwmonSensor
from edgeprof.hardware.board import jetson_model
from edgeprof.sensors.jetson import Ina3221Sensor, TegrastatsSensor
from edgeprof.sensors.nvml import NvmlSensor
from edgeprof.sensors.process import ProcessSensor
from edgeprof.sensors.rapl import RaplSensor
from edgeprof.sensors.raspberrypi import VcgencmdSensor
from edgeprof.sensors.thermal import ThermalZonesSensor


@dataclass(frozen=True)
class HostRoots:
    """Filesystem roots the sensors read (`/` in real use; a tmp tree in tests)."""

    root: Path = Path("/")

    @property
    def sys(self) -> Path:
        return self.root / "sys"


def candidate_sensors(roots: HostRoots = HostRoots(), nvml: NvmlSensor | None = None,
                      sample_hz: float = 10.0, vcgencmd: str = "vcgencmd") -> list[Sensor]:
    """Every sensor edgeprof knows, unprobed; `vcgencmd` is the Raspberry Pi tool's path (a fake in tests)."""
    return [
        ProcessSensor(sample_hz),
        RaplSensor(roots.sys / "class/powercap"),
        ThermalZonesSensor(roots.sys / "class/thermal"),
        HwmonSensor(roots.sys / "class/hwmon"),
        BatterySensor(roots.sys / "class/power_supply"),
        nvml or NvmlSensor(sample_hz=sample_hz),
        Ina3221Sensor(roots.sys / "bus/i2c/drivers"),
        VcgencmdSensor(vcgencmd, sample_hz=sample_hz),
    ]


def probe_sensors(sensors: list[Sensor], roots: HostRoots = HostRoots(),
                  sample_hz: float = 10.0) -> tuple[list[Sensor], list[SensorState]]:
    """Probe each candidate; return the available ones and every sensor's state (with reasons).

    On a Jetson whose INA3221 rails are not readable from sysfs, tegrastats is started instead.
    """
    available: list[Sensor] = []
    states: list[SensorState] = []
    for sensor in sensors:
        availability = sensor.probe()
        states.append(SensorState(sensor.name, availability, sensor.metrics() if availability.available else []))
        if availability.available:
            available.append(sensor)
        else:
            sensor.close()
    ina = next((s for s in states if s.name == "ina3221"), None)
    if jetson_model(roots.root) and not (ina and ina.availability.available):
        tegrastats = TegrastatsSensor(interval_ms=max(int(1000 / sample_hz), 10))
        availability = tegrastats.probe()
        states.append(SensorState(tegrastats.name, availability, tegrastats.metrics()))
        if availability.available:
            available.append(tegrastats)
    elif not any(s.name == "tegrastats" for s in states):
        states.append(SensorState("tegrastats", Availability(False, "not a Jetson")))
    return available, states
