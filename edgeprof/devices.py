"""Device profiles (top-level `devices/` YAML) and detection of the host we run on.

A profile says what a device is; `HostFacts` says what this machine measurably has. Records carry both,
so a figure is always tied to the hardware that made it.
"""

from __future__ import annotations

import difflib
import os
import platform
from dataclasses import asdict, dataclass

import psutil

from edgeprof.catalog import load_entries
from edgeprof.errors import CatalogError


@dataclass(frozen=True)
class HostFacts:
    """What this machine has, read at run time."""

    hostname: str
    machine: str
    cpu_model: str
    physical_cores: int
    logical_cores: int
    memory_gb: float
    os: str

    def to_dict(self) -> dict:
        return asdict(self)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_facts() -> HostFacts:
    logical = os.cpu_count() or 1
    return HostFacts(
        hostname=platform.node(),
        machine=platform.machine(),
        cpu_model=_cpu_model(),
        physical_cores=psutil.cpu_count(logical=False) or logical,
        logical_cores=logical,
        memory_gb=round(psutil.virtual_memory().total / 2**30, 2),
        os=f"{platform.system()} {platform.release()}",
    )


@dataclass(frozen=True)
class DeviceProfile:
    """A device profile from the catalog (the raw YAML is kept for fields later modules read)."""

    name: str
    display_name: str
    kind: str
    data: dict


def list_profiles() -> list[DeviceProfile]:
    return [_profile(name, data) for name, (data, _) in sorted(load_entries("devices").items())]


def _profile(name: str, data: dict) -> DeviceProfile:
    return DeviceProfile(name, str(data.get("display_name", name)), str(data.get("kind", "unknown")), data)


def get_profile(name: str) -> DeviceProfile:
    entries = load_entries("devices")
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else f" (known: {', '.join(sorted(entries))})"
        raise CatalogError(f"unknown device profile {name!r}{hint}")
    return _profile(name, entries[name][0])


def detect_profile(facts: HostFacts | None = None) -> DeviceProfile:
    """The profile whose `detect.machine` lists this host's architecture (generic CPU profiles)."""
    facts = facts or host_facts()
    for profile in list_profiles():
        machines = (profile.data.get("detect") or {}).get("machine") or []
        if facts.machine in machines:
            return profile
    raise CatalogError(f"no device profile matches this host ({facts.machine}); add one under devices/")
