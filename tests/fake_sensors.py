"""Fake sysfs trees and a fake NVML module for sensor tests."""

from __future__ import annotations

from pathlib import Path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class NVMLError(Exception):
    pass


class FakeNvml:
    """Enough of pynvml for NvmlSensor: one GPU drawing `power_w`; `supported=False` acts like a Jetson.
    No field values (as nvidia-ml-py before them): power comes from the 1 s averaged power usage."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2

    def __init__(self, power_w: float = 250.0, supported: bool = True, throttle_mask: int = 0, count: int = 1):
        self.count = count
        self.power_w = power_w
        self.supported = supported
        self.throttle_mask = throttle_mask
        self.energy_mj = 1_000_000
        self.shutdowns = 0

    def _check(self):
        if not self.supported:
            raise NVMLError("Not Supported")

    def nvmlInit(self): ...
    def nvmlShutdown(self): self.shutdowns += 1
    def nvmlDeviceGetCount(self): return self.count
    def nvmlDeviceGetHandleByIndex(self, i): return i
    def nvmlDeviceGetName(self, h): return "Fake H100"
    def nvmlDeviceGetUUID(self, h): return f"GPU-fake-{h}"

    def nvmlDeviceGetPowerUsage(self, h):
        self._check()
        return self.power_w * 1e3

    def nvmlDeviceGetTotalEnergyConsumption(self, h):
        self._check()
        self.energy_mj += 100
        return self.energy_mj

    def nvmlDeviceGetTemperature(self, h, kind):
        self._check()
        return 61

    def nvmlDeviceGetClockInfo(self, h, kind): return 1980 if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        self._check()
        return self.throttle_mask

    def nvmlDeviceGetMemoryInfo(self, h):
        self._check()
        return type("Mem", (), {"used": 4 * 2**30})()

    def nvmlDeviceGetUtilizationRates(self, h):
        self._check()
        return type("Util", (), {"gpu": 97})()


class ConstantPowerSensor:
    """A board-scope power sensor that reads `watts` (alternating by 1 µW, as a real sensor is never
    perfectly still: a reading that never changes counts as stale), plus a temperature that rises per read."""

    name = "constant"

    def __init__(self, watts: float = 10.0, period_s: float | None = None):
        from edgeprof.sensors.base import Metric

        self.watts = watts
        self.reads = 0
        self._metrics = [Metric("constant.power_w", "W", "power_w", "board", "board", period_s=period_s,
                                period_note="test"),
                         Metric("constant.temp_c", "C", "temp_c")]

    def probe(self):
        from edgeprof.sensors.base import Availability

        return Availability(True)

    def metrics(self):
        return self._metrics

    def read(self):
        self.reads += 1
        return {"constant.power_w": self.watts + 1e-6 * (self.reads % 2), "constant.temp_c": 40.0 + self.reads * 0.01}

    def close(self): ...
