"""NVIDIA GPUs through NVML (nvidia-ml-py): power, total-energy counter, temperature, clocks, clock-event
(throttle) reasons, memory and utilisation, per GPU. Which GPUs exist and which a run uses is
`hardware/gpus.py`'s question: this module only samples them.

Availability is decided by real reads, not by `nvmlInit`: on Jetson, NVML initialises and lists the GPU
but answers NotSupported to power, energy and temperature queries. Each metric is probed on its own and
only the ones that answer are sampled.

Power comes from the finest source the driver answers. `nvmlDeviceGetPowerUsage` is, on Ampere and later
GPUs, an average over the last second (NVML's documentation; measured on an H100: it takes 1.05 s to
reach 90 % of a load step, results/energy/h100/nvml_power_probe.json), so a 150 ms phase read from it sits
inside the ramp. The field `NVML_FI_DEV_POWER_INSTANT` (driver >= 530) is instantaneous power: on the
same H100 it reached 90 % in 0.15 s and changes every 100 ms. Each source's refresh period is measured
at probe time and recorded with the metric.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace

from edgeprof.hardware.gpus import gpu_uuid, load_pynvml, nvml_text
from edgeprof.sensors.base import Availability, Metric, measure_change_interval_s

THROTTLE_REASONS = {
    0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake",
}
"""Clock-event reasons that mean the GPU was held back (idle, app clocks and sync boost are not)."""


def throttle_names(mask: int) -> list[str]:
    return [name for bit, name in THROTTLE_REASONS.items() if int(mask) & bit]


SLOW_READ_S = 1e-3
SLOW_READ_INTERVAL_S = 2.0
FIELD_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT in nvml.h (not in every nvidia-ml-py release)
AVERAGED_POWER_S = 1.0  # nvmlDeviceGetPowerUsage's averaging window on Ampere and later (NVML docs)


def _instant_power_reader(nvml, handle) -> Callable[[], float]:
    field = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", FIELD_POWER_INSTANT)

    def read() -> float:
        (value,) = nvml.nvmlDeviceGetFieldValues(handle, [field])
        if value.nvmlReturn != 0:  # NVML_SUCCESS
            raise RuntimeError(f"NVML field {field} answered {value.nvmlReturn}")
        return float(value.value.uiVal) / 1e3

    return read


def _fastest_read_s(read: Callable[[], float], tries: int = 3) -> float:
    """Cost of a read, the fastest of a few: NVML's first call of a kind is slow once, not every time."""
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        read()
        best = min(best, time.perf_counter() - start)
    return best


class NvmlSensor:
    """Per GPU: cheap reads every tick; a read that costs more than 1 ms (the total-energy counter takes
    about 4 ms on an H100 host) only every `SLOW_READ_INTERVAL_S` seconds."""

    name = "nvml"

    def __init__(self, load_module: Callable = load_pynvml, sample_hz: float = 10.0, period_budget_s: float = 0.35,
                 gpu_uuids: list[str] | None = None):
        self._load_module = load_module
        self._gpu_uuids = gpu_uuids  # None: every GPU; else only these (the run's GPUs, see select_gpus)
        self._sample_hz = sample_hz
        self._period_budget_s = period_budget_s
        self._nvml = None
        self._readers: dict[str, tuple[Callable[[], float], Metric]] = {}
        self._every: dict[str, int] = {}
        self._tick = 0
        self.read_errors: dict[str, int] = {}  # metric -> failed reads

    def _candidates(self, nvml, index: int, handle) -> list[tuple[Metric, Callable[[], float]]]:
        p = f"nvml.gpu{index}"
        domain = f"gpu{index}"
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or getattr(
            nvml, "nvmlDeviceGetCurrentClocksThrottleReasons")
        return [
            *self._power_source(nvml, handle, p, domain),
            (Metric(f"{p}.energy_j", "J", "energy_j", domain),
             lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3),
            (Metric(f"{p}.temp_c", "C", "temp_c"),
             lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))),
            (Metric(f"{p}.sm_clock_mhz", "MHz", "clock_mhz"),
             lambda: float(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM))),
            (Metric(f"{p}.mem_clock_mhz", "MHz", "clock_mhz"),
             lambda: float(nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM))),
            (Metric(f"{p}.throttle", "mask", "throttle"), lambda: float(int(reasons(handle)))),
            (Metric(f"{p}.mem_used_mb", "MB", "mem_mb"), lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20),
            (Metric(f"{p}.util_pct", "%", "util_pct"), lambda: float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)),
        ]

    def _power_source(self, nvml, handle, prefix: str, domain: str) -> list[tuple[Metric, Callable[[], float]]]:
        """The instantaneous power field where the driver answers it, else the 1 s averaged power usage;
        either way with its refresh period measured here."""
        instant = _instant_power_reader(nvml, handle)
        try:
            instant()
        except Exception:  # noqa: BLE001 - older drivers, or nvidia-ml-py without field values
            pass
        else:
            changes = measure_change_interval_s(instant, self._period_budget_s)
            period, note = (changes, f"measured: the instantaneous power field changes every {changes * 1e3:.0f} ms") \
                if changes else (self._period_budget_s, "measured: the instantaneous power field changed less than "
                                                        f"3 times in {self._period_budget_s:g} s")
            return [(Metric(f"{prefix}.power_w", "W", "power_w", domain, period_s=period, period_note=note), instant)]

        def usage() -> float:
            return nvml.nvmlDeviceGetPowerUsage(handle) / 1e3

        try:
            changes = measure_change_interval_s(usage, self._period_budget_s)
        except Exception:  # noqa: BLE001 - NotSupported: the probe below drops the metric
            changes = None
        note = (f"documented: power usage is a {AVERAGED_POWER_S:g} s average on Ampere and later GPUs"
                + (f"; measured: it changes every {changes * 1e3:.0f} ms" if changes else ""))
        return [(Metric(f"{prefix}.power_w", "W", "power_w", domain, period_s=max(AVERAGED_POWER_S, changes or 0.0),
                        period_note=note), usage)]

    def probe(self) -> Availability:
        try:
            nvml = self._load_module()
        except ImportError:
            return Availability(False, "nvidia-ml-py is not installed", "pip install nvidia-ml-py")
        try:
            nvml.nvmlInit()
            count = nvml.nvmlDeviceGetCount()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            return Availability(False, f"NVML did not initialise ({exc})")
        self._nvml = nvml
        readers: dict[str, tuple[Callable[[], float], Metric]] = {}
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            if self._gpu_uuids is not None and (gpu_uuid(nvml, handle) or str(index)) not in self._gpu_uuids:
                continue  # another GPU of this host: its power and memory are not this run's
            for metric, read in self._candidates(nvml, index, handle):
                try:
                    cost_s = _fastest_read_s(read)
                except Exception:  # NotSupported or NoPermission: this metric is not offered here
                    continue
                if cost_s > SLOW_READ_S:
                    self._every[metric.name] = max(1, math.ceil(SLOW_READ_INTERVAL_S * self._sample_hz))
                    metric = replace(metric, slow_read_ms=round(cost_s * 1e3, 2))
                    if metric.kind in ("energy_j", "power_w"):
                        metric = replace(metric, period_s=max(metric.period_s or 0.0, SLOW_READ_INTERVAL_S),
                                         period_note=f"read every {SLOW_READ_INTERVAL_S:g} s: a read costs "
                                                     f"{cost_s * 1e3:.1f} ms")
                readers[metric.name] = (read, metric)
        self._readers = readers
        energy_like = [m for _, m in readers.values() if m.kind in ("power_w", "energy_j", "temp_c")]
        if not count:
            return Availability(False, "NVML initialised but lists no GPU")
        if self._gpu_uuids is not None and not self._gpu_uuids:
            return Availability(False, f"the run uses none of the {count} GPU(s): their power is not the run's")
        if not energy_like:
            return Availability(False, f"NVML lists {count} GPU(s) but power, energy and temperature reads answer "
                                       "NotSupported (as on Jetson; use the jetson sensor there)")
        if self._gpu_uuids is not None:
            return Availability(True, f"the run's {len(self._gpu_uuids)} of {count} GPU(s): "
                                      + ", ".join(self._gpu_uuids))
        return Availability(True, f"{count} GPU(s): " + ", ".join(self._names(nvml, count)))

    @staticmethod
    def _names(nvml, count: int) -> list[str]:
        names = []
        for index in range(count):
            names.append(nvml_text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(index))))
        return names

    def gpu_names(self) -> list[str]:
        if self._nvml is None:
            return []
        return self._names(self._nvml, self._nvml.nvmlDeviceGetCount())

    def metrics(self) -> list[Metric]:
        return [metric for _, metric in self._readers.values()]

    def read(self) -> dict[str, float]:
        values = {}
        tick = self._tick
        self._tick += 1
        for name, (read, _) in self._readers.items():
            if tick % self._every.get(name, 1):
                continue
            try:
                values[name] = read()
            except Exception:  # noqa: BLE001 - a transient NVML error drops one reading, counted
                self.read_errors[name] = self.read_errors.get(name, 0) + 1
        return values

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down twice is harmless
                pass
            self._nvml = None
        self._readers = {}
