"""Fleets: one sweep across many devices on Dask distributed, with mutual TLS (see ARCHITECTURE.md).

`FLEET_FILE` marks a fleet sweep's folder; it lives here so `sweep --resume` can tell one apart without
importing the engine.
"""

FLEET_FILE = "fleet.json"
