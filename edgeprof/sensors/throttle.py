"""Throttle bitmasks by source: which conditions a mask names, and which limit each one is.

Two sensors report throttling as a bitmask with meanings of their own: NVML's clock-event reasons and the
Raspberry Pi firmware's `get_throttled`. A window's reasons and a sustained run's "which limit fired"
(thermal, power or clock) both need the mask read with its own source's table.
"""

from __future__ import annotations

from edgeprof.sensors import nvml, raspberrypi

NVML_LIMITS = {"sw_power_cap": "power", "hw_power_brake": "power", "sw_thermal": "thermal",
               "hw_thermal": "thermal", "hw_slowdown": "clock"}
"""NVML's HW slowdown halves the clocks for heat or a power brake without saying which: a clock limit."""
LIMITS = ("thermal", "power", "clock")


def reason_names(metric_name: str, mask: int) -> list[str]:
    """Conditions a throttle metric's mask names (now, not since boot)."""
    if metric_name.startswith("rpi."):
        return raspberrypi.throttle_names(int(mask))
    return nvml.throttle_names(int(mask))


def limit_of(reason: str) -> str:
    """"thermal", "power" or "clock" for a reason name of either source."""
    return raspberrypi.THROTTLE_LIMITS.get(reason) or NVML_LIMITS.get(reason, "clock")
