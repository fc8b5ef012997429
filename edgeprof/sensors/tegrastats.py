"""Parse NVIDIA Jetson `tegrastats` lines from every board family and L4T release seen in the field.

Formats differ by board and release: CPU lists with `off` cores, `GR3D_FREQ x%@MHz` or `x%@[MHz,MHz]`,
temperatures `name@xxC` in either case (`-256C` means the sensor is off), rails as `NAME cur/avg` (mW
without a unit, older L4T), `NAME curmW/avgmW` or `curmW/avgmW/maxmW` (newer), extra spaces and an
optional leading date. Each field is found by its own pattern, so unknown fields are ignored rather
than breaking the parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

BOARD_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # Orin/Xavier/TX2 and Nano names for the board's input power
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "LFB"}
_SENSOR_OFF_C = -256.0

_DATE = re.compile(r"^\s*(\d{2}-\d{2}-\d{4}\s+\d{2}:\d{2}:\d{2})")
_RAM = re.compile(r"\bRAM\s+(\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP\s+(\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU\s*\[([^\]]*)\]")
_CPU_CORE = re.compile(r"^\s*(\d+(?:\.\d+)?)%(?:@(\d+))?\s*$")
_EMC = re.compile(r"\bEMC_FREQ\s+(\d+(?:\.\d+)?)%(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ\s+(\d+(?:\.\d+)?)%(?:@\[?([\d,\s]+)\]?)?")
_TEMP = re.compile(r"\b([A-Za-z][\w-]*)@(-?\d+(?:\.\d+)?)C\b")
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*)\s+(\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?![\w/])")


@dataclass
class TegrastatsSample:
    """One tegrastats line. Power in mW, temperature in °C, frequency in MHz, memory in MB, load in %."""

    timestamp: str | None = None
    ram_used_mb: float | None = None
    ram_total_mb: float | None = None
    swap_used_mb: float | None = None
    swap_total_mb: float | None = None
    cpu_load_pct: list[float | None] = field(default_factory=list)  # None = core off
    cpu_freq_mhz: list[float | None] = field(default_factory=list)
    emc_load_pct: float | None = None
    emc_freq_mhz: float | None = None
    gpu_load_pct: float | None = None
    gpu_freq_mhz: float | None = None  # the first GPC's clock where several are listed
    temps_c: dict[str, float] = field(default_factory=dict)
    temps_off: list[str] = field(default_factory=list)
    rails_mw: dict[str, float] = field(default_factory=dict)  # instantaneous
    rails_avg_mw: dict[str, float] = field(default_factory=dict)
    board_power_mw: float | None = None
    board_power_source: str | None = None  # VDD_IN, POM_5V_IN, or "sum of rails" when no input rail exists

    @property
    def cpu_online(self) -> int:
        return sum(1 for load in self.cpu_load_pct if load is not None)


def parse_tegrastats_line(line: str) -> TegrastatsSample:
    """Parse one line; fields that are absent stay None or empty."""
    sample = TegrastatsSample()
    if m := _DATE.match(line):
        sample.timestamp = m.group(1)
    if m := _RAM.search(line):
        sample.ram_used_mb, sample.ram_total_mb = float(m.group(1)), float(m.group(2))
    if m := _SWAP.search(line):
        sample.swap_used_mb, sample.swap_total_mb = float(m.group(1)), float(m.group(2))
    if m := _CPU.search(line):
        for entry in m.group(1).split(","):
            core = _CPU_CORE.match(entry)
            if core is None:  # "off" or anything unreadable: the core is not running
                sample.cpu_load_pct.append(None)
                sample.cpu_freq_mhz.append(None)
            else:
                sample.cpu_load_pct.append(float(core.group(1)))
                sample.cpu_freq_mhz.append(float(core.group(2)) if core.group(2) else None)
    if m := _EMC.search(line):
        sample.emc_load_pct = float(m.group(1))
        sample.emc_freq_mhz = float(m.group(2)) if m.group(2) else None
    if m := _GR3D.search(line):
        sample.gpu_load_pct = float(m.group(1))
        freqs = [f for f in (m.group(2) or "").replace(" ", "").split(",") if f]
        sample.gpu_freq_mhz = float(freqs[0]) if freqs else None
    for name, value in _TEMP.findall(line):
        if float(value) <= _SENSOR_OFF_C:
            sample.temps_off.append(name)
        else:
            sample.temps_c[name] = float(value)
    for name, current, average, _maximum in _RAIL.findall(line):
        if name in _NOT_RAILS:
            continue
        sample.rails_mw[name] = float(current)
        sample.rails_avg_mw[name] = float(average)
    for rail in BOARD_INPUT_RAILS:
        if rail in sample.rails_mw:
            sample.board_power_mw, sample.board_power_source = sample.rails_mw[rail], rail
            break
    else:
        if sample.rails_mw:
            sample.board_power_mw, sample.board_power_source = sum(sample.rails_mw.values()), "sum of rails"
    return sample
