"""Fleets: one sweep across many devices on Dask distributed, with mutual TLS (see ARCHITECTURE.md).

`FLEET_FILE` marks a fleet sweep's folder; it lives here so `sweep --resume` can tell one apart without
importing the engine. `resource_name` is here because the head (which lists devices by it), the device
(which advertises it) and the sweep (which claims it) all use it, and none of them imports another for it.
"""

FLEET_FILE = "fleet.json"


def resource_name(device: str) -> str:
    """The resource a device advertises and every measurement on it claims (one unit)."""
    return f"edgeprof:{device}"
