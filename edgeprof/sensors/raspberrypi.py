"""Raspberry Pi through `vcgencmd`: the Pi 5's PMIC rails (`pmic_read_adc`) and Pi 4/5 throttling
(`get_throttled`).

The Pi 5's PMIC (Renesas DA9091) reports a voltage and a current for each rail it supplies:
`VDD_CORE_A current(7)=2.03750000A` and `VDD_CORE_V volt(15)=0.87355220V` on lines of their own. The
rail power is V x A; `rpi.pmic.power_w` sums the rails that have both. That total covers what the PMIC
delivers — the SoC core, the CPU cluster's and memory's supplies, 3V3/1V8/1V1 system rails, HDMI — but
not the 5 V input itself (`EXT5V_V` has a voltage and no current): USB devices, the fan and the PMIC's
own conversion losses are outside it, so it is a component domain ("pmic-rails"), never the board.
Public comparisons against a USB-C meter put the whole board at about 1.13-1.15 x this sum + 0.6 W;
edgeprof reports the sum as measured and applies no such correction.

`get_throttled` is one bitmask (`throttled=0x50005`): bits 0-3 are conditions now (under-voltage, ARM
frequency capped, throttled, soft temperature limit), bits 16-19 the same since boot. Windows take the
"now" bits; the since-boot ones go into the probe's reason, since a board throttled an hour ago would
otherwise flag every window.

Every read is a `vcgencmd` process (5-20 ms on a Pi 5), so the sensor reads itself only every
`read_interval_s` (at least 100 reads' cost apart: under 1 % of a core), and the PMIC's period is the
longer of that interval and how often its values change at probe. vcgencmd takes no user input: its
arguments are fixed argv lists, never a shell.
"""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Callable

from edgeprof.hardware.board import run_command
from edgeprof.sensors.base import Availability, Metric, measure_change_interval_s

_PMIC_LINE = re.compile(r"^\s*(?P<label>[A-Za-z0-9_]+)_(?P<kind>[AV])\s+(?:current|volt)\(\d+\)\s*=\s*"
                        r"(?P<value>[-+0-9.eE]+)\s*[AV]?\s*$")
_PMIC_EQ_LINE = re.compile(r"^\s*(?P<label>[A-Za-z0-9_]+)_(?P<kind>[AV])\s*=\s*(?P<value>[-+0-9.eE]+)\s*[AV]?\s*$")
_THROTTLED = re.compile(r"throttled\s*=\s*(0x[0-9a-fA-F]+|\d+)")

THROTTLE_BITS = {0x1: "under_voltage", 0x2: "arm_freq_capped", 0x4: "throttled", 0x8: "soft_temp_limit"}
"""`get_throttled` bits that describe now; each shifted left by 16 means 'has occurred since boot'."""
THROTTLE_LIMITS = {"under_voltage": "power", "arm_freq_capped": "clock", "throttled": "thermal",
                   "soft_temp_limit": "thermal"}
"""Which limit each condition is: under-voltage is the supply, throttling and the soft limit are the
firmware's temperature response, the cap is the clock itself (firmware caps it for either)."""

SLOW_SHARE = 0.01  # reads may cost this share of a core
MIN_READ_INTERVAL_S = 0.5
VCGENCMD_TIMEOUT_S = 5.0


def parse_pmic_adc(text: str) -> dict[str, dict[str, float]]:
    """Rails of `vcgencmd pmic_read_adc`: {"VDD_CORE": {"V": 0.87, "A": 2.04}, "EXT5V": {"V": 5.09}}.

    Takes the firmware's format (`LABEL_A current(N)=VALUEA`, `LABEL_V volt(N)=VALUEV`, any indentation
    and index) and the bare `LABEL_A=VALUEA` some documentation shows; other lines are ignored."""
    rails: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = _PMIC_LINE.match(line) or _PMIC_EQ_LINE.match(line)
        if not match:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        rails.setdefault(match["label"], {})[match["kind"]] = value
    return rails


def rail_powers_w(rails: dict[str, dict[str, float]]) -> dict[str, float]:
    """V x A of each rail that has both (the 5 V input and the RTC battery have only a voltage)."""
    return {name: values["V"] * values["A"] for name, values in rails.items() if "V" in values and "A" in values}


def parse_throttled(text: str) -> int | None:
    """The bitmask of `vcgencmd get_throttled` (`throttled=0x50005`), or None when the text has none."""
    match = _THROTTLED.search(text)
    if not match:
        return None
    value = match.group(1)
    return int(value, 16) if value.lower().startswith("0x") else int(value)


def decode_throttled(mask: int) -> dict[str, list[str]]:
    """{"now": [...], "since_boot": [...]} condition names of a `get_throttled` bitmask."""
    return {"now": [name for bit, name in THROTTLE_BITS.items() if mask & bit],
            "since_boot": [name for bit, name in THROTTLE_BITS.items() if mask & (bit << 16)]}


def throttle_names(mask: int) -> list[str]:
    """Conditions active now (what a window reports as its throttling)."""
    return decode_throttled(int(mask))["now"]


Runner = Callable[[list[str]], tuple[int, str]]


def run_vcgencmd(argv: list[str]) -> tuple[int, str]:
    return run_command(argv, timeout_s=VCGENCMD_TIMEOUT_S)


def _not_permitted(output: str) -> bool:
    lowered = output.lower()
    return any(marker in lowered for marker in ("vchi initialization failed", "permission denied", "can't open",
                                                "failed to open", "mailbox"))


class VcgencmdSensor:
    """The Pi 5's PMIC rails and the Pi 4/5 throttle flags, through `vcgencmd`."""

    name = "vcgencmd"

    def __init__(self, vcgencmd: str = "vcgencmd", sample_hz: float = 10.0, run: Runner = run_vcgencmd,
                 period_budget_s: float = 0.35):
        """`vcgencmd`: the executable (a fake one in tests); `run` executes an argv list."""
        self.vcgencmd = vcgencmd
        self._run = run
        self._sample_hz = sample_hz
        self._period_budget_s = period_budget_s
        self._pmic = False
        self._throttled = False
        self._rails: list[str] = []  # labels with V and/or A at probe
        self._every = 1
        self._tick = 0
        self._period: tuple[float, str] = (1.0, "")
        self.read_errors: dict[str, int] = {}
        self.since_boot: list[str] = []

    def _call(self, *args: str) -> tuple[int, str]:
        return self._run([self.vcgencmd, *args])

    def _pmic_rails(self) -> dict[str, dict[str, float]]:
        code, output = self._call("pmic_read_adc")
        if code != 0:
            raise RuntimeError(output.strip() or f"exit code {code}")
        return parse_pmic_adc(output)

    def probe(self) -> Availability:
        if shutil.which(self.vcgencmd) is None:
            return Availability(False, f"{self.vcgencmd} not found (not a Raspberry Pi, or raspi-utils not installed)",
                                "on Raspberry Pi OS: sudo apt install raspi-utils")
        started = time.perf_counter()
        code, output = self._call("get_throttled")
        cost_s = time.perf_counter() - started
        if code != 0 and _not_permitted(output):
            return Availability(False, f"vcgencmd cannot reach the firmware ({output.strip().splitlines()[0]})",
                                "add the user to the video group: sudo usermod -aG video $USER, then log in again")
        mask = parse_throttled(output) if code == 0 else None
        self._throttled = mask is not None
        notes = []
        if mask is not None:
            self.since_boot = decode_throttled(mask)["since_boot"]
            notes.append("get_throttled" + (f" (since boot: {', '.join(self.since_boot)})" if self.since_boot else ""))
        code, output = self._call("pmic_read_adc")
        rails = parse_pmic_adc(output) if code == 0 else {}
        self._pmic = bool(rail_powers_w(rails))
        self._rails = sorted(rails)
        interval = max(MIN_READ_INTERVAL_S, cost_s / SLOW_SHARE)
        self._every = max(1, math.ceil(interval * self._sample_hz))
        if self._pmic:
            self._period = self._measure_period(interval)
            covered = ", ".join(sorted(rail_powers_w(rails)))
            notes.append(f"PMIC rails {covered} (not the 5 V input: USB, fan and PMIC losses are outside the sum)")
        elif code == 0 or rails:
            notes.append("pmic_read_adc gives no rail with both voltage and current (a Pi 4 or older has no PMIC ADC)")
        else:
            notes.append(f"pmic_read_adc failed ({output.strip().splitlines()[0] if output.strip() else code}): "
                         "a Pi 4 or older has no PMIC ADC")
        if not (self._pmic or self._throttled):
            return Availability(False, "; ".join(notes) or "vcgencmd answered neither pmic_read_adc nor get_throttled")
        return Availability(True, "; ".join(notes))

    def _measure_period(self, read_interval_s: float) -> tuple[float, str]:
        """The PMIC's refresh as measured at probe, never finer than this sensor's own read interval."""
        def total() -> float:
            return sum(rail_powers_w(self._pmic_rails()).values())

        try:
            changes = measure_change_interval_s(total, self._period_budget_s)
        except RuntimeError:
            changes = None
        if changes and changes >= read_interval_s:
            return changes, f"measured: the PMIC rails change every {changes * 1e3:.0f} ms"
        detail = f"changes every {changes * 1e3:.0f} ms at probe" if changes else \
            f"changed less than 3 times in {self._period_budget_s:g} s at probe"
        return read_interval_s, (f"read every {read_interval_s:g} s: a vcgencmd call costs that much over 1 % "
                                 f"of a core ({detail})")

    def metrics(self) -> list[Metric]:
        metrics = []
        if self._pmic:
            period_s, note = self._period
            metrics.append(Metric("rpi.pmic.power_w", "W", "power_w", "pmic-rails", "component",
                                  slow_read_ms=None, period_s=period_s, period_note=note))
            for rail in self._rails:
                metrics.append(Metric(f"rpi.pmic.{rail}.volt_v", "V", "volt_v"))
                metrics.append(Metric(f"rpi.pmic.{rail}.current_a", "A", "current_a"))
        if self._throttled:
            metrics.append(Metric("rpi.throttled", "mask", "throttle"))
        return metrics

    def read(self) -> dict[str, float]:
        tick = self._tick
        self._tick += 1
        if tick % self._every:
            return {}
        values: dict[str, float] = {}
        if self._pmic:
            try:
                rails = self._pmic_rails()
            except RuntimeError:
                self.read_errors["pmic_read_adc"] = self.read_errors.get("pmic_read_adc", 0) + 1
            else:
                powers = rail_powers_w(rails)
                if powers:
                    values["rpi.pmic.power_w"] = sum(powers.values())
                for rail, found in rails.items():
                    if "V" in found:
                        values[f"rpi.pmic.{rail}.volt_v"] = found["V"]
                    if "A" in found:
                        values[f"rpi.pmic.{rail}.current_a"] = found["A"]
        if self._throttled:
            code, output = self._call("get_throttled")
            mask = parse_throttled(output) if code == 0 else None
            if mask is None:
                self.read_errors["get_throttled"] = self.read_errors.get("get_throttled", 0) + 1
            else:
                values["rpi.throttled"] = float(mask)
        return values

    def close(self) -> None:
        self._pmic = self._throttled = False
