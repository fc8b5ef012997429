"""NVIDIA Jetson: detection, the INA3221 power monitor in sysfs, tegrastats, and the power-mode facts.

INA3221 layouts: newer L4T exposes hwmon channels (`in*_label`, `in*_input` mV, `curr*_input` mA) under
`/sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*`; older L4T exposes iio (`rail_name_N`, `in_power N_input`
mW) under `/sys/bus/i2c/drivers/ina3221x/*/iio:device*`. The board's input rail (VDD_IN, or POM_5V_IN on
the Nano) measures the whole module and is the board-scope domain; the other rails are parts of it.
A rail's period is the hwmon driver's `update_interval` (ms) where it exists, else how often the value
changes at probe; tegrastats' period is its own `--interval`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edgeprof.hardware.board import jetson_model
from edgeprof.lifetime import pdeathsig_preexec
from edgeprof.sensors.base import Availability, Metric, measure_change_interval_s, read_number, read_text
from edgeprof.sensors.tegrastats import BOARD_INPUT_RAILS, TegrastatsSample, parse_tegrastats_line


def _rail_metric(rail: str, period_s: float | None = None, period_note: str = "") -> Metric:
    domain, scope = ("board", "board") if rail in BOARD_INPUT_RAILS else (f"rail.{rail}", "component")
    return Metric(f"jetson.{rail}.power_w", "W", "power_w", domain, scope, period_s=period_s, period_note=period_note)


class Ina3221Sensor:
    name = "ina3221"

    def __init__(self, root: str | Path = "/sys/bus/i2c/drivers", period_budget_s: float = 0.35):
        self.root = Path(root)
        self._period_budget_s = period_budget_s
        self._rails: dict[str, Callable[[], float]] = {}
        self._period: tuple[float, str] = (1.0, "")
        self.read_errors: dict[str, int] = {}  # rail -> failed reads

    def _measure_period(self) -> tuple[float, str]:
        """The chip's conversion interval where hwmon publishes it; else measured on the first rail."""
        for interval_file in sorted(self.root.glob("ina3221*/*/hwmon/hwmon*/update_interval")):
            try:
                return read_number(interval_file, 1e-3), "documented by the driver: update_interval"
            except (OSError, ValueError):
                continue
        read = next(iter(self._rails.values()))
        changes = measure_change_interval_s(read, self._period_budget_s)
        if changes:
            return changes, f"measured: changes every {changes * 1e3:.0f} ms"
        return 1.0, f"assumed 1 s: the value changed less than 3 times in {self._period_budget_s:g} s at probe"

    def _hwmon_rails(self) -> dict[str, Callable[[], float]]:
        rails = {}
        for label_file in sorted(self.root.glob("ina3221*/*/hwmon/hwmon*/in*_label")):
            index = label_file.name[2:].split("_")[0]
            folder = label_file.parent
            volts, amps = folder / f"in{index}_input", folder / f"curr{index}_input"
            if not (volts.exists() and amps.exists()):
                continue
            label = read_text(label_file)
            if "sum" in label.lower():
                continue  # the "sum of shunt voltages" channel is not a rail
            rails[label] = lambda v=volts, a=amps: read_number(v, 1e-3) * read_number(a, 1e-3)
        return rails

    def _iio_rails(self) -> dict[str, Callable[[], float]]:
        rails = {}
        for name_file in sorted(self.root.glob("ina3221*/*/iio:device*/rail_name_*")):
            index = name_file.name.rsplit("_", 1)[1]
            power = name_file.parent / f"in_power{index}_input"
            if power.exists():
                rails[read_text(name_file)] = lambda p=power: read_number(p, 1e-3)
        return rails

    def probe(self) -> Availability:
        if not self.root.exists():
            return Availability(False, f"no {self.root} (not a Jetson)")
        rails = {}
        for name, read in {**self._hwmon_rails(), **self._iio_rails()}.items():
            try:
                read()
            except (OSError, ValueError):
                continue
            rails[name] = read
        self._rails = rails
        if not rails:
            return Availability(False, "no readable INA3221 rails")
        self._period = self._measure_period()
        board = [r for r in rails if r in BOARD_INPUT_RAILS]
        note = f"board input {board[0]}" if board else "no board input rail: only component rails (not the whole board)"
        return Availability(True, f"rails {', '.join(rails)}; {note}")

    def metrics(self) -> list[Metric]:
        return [_rail_metric(rail, *self._period) for rail in self._rails]

    def read(self) -> dict[str, float]:
        values = {}
        for rail, read in self._rails.items():
            try:
                values[f"jetson.{rail}.power_w"] = read()
            except (OSError, ValueError):
                self.read_errors[rail] = self.read_errors.get(rail, 0) + 1
        return values

    def close(self) -> None:
        self._rails = {}


class TegrastatsSensor:
    """Runs `tegrastats --interval N` and serves its latest line; the fallback where sysfs rails are closed."""

    name = "tegrastats"

    def __init__(self, interval_ms: int = 100, command: list[str] | None = None):
        self.command = command or ["tegrastats", "--interval", str(interval_ms)]
        self._interval_s = interval_ms / 1e3
        self._latest_at = 0.0
        self._process: subprocess.Popen | None = None
        self._latest: TegrastatsSample | None = None
        self._first_line = threading.Event()
        self._metrics: list[Metric] = []

    def _pump(self) -> None:
        assert self._process and self._process.stdout
        for line in self._process.stdout:
            self._latest = parse_tegrastats_line(line)
            self._latest_at = time.monotonic()
            self._first_line.set()

    def probe(self) -> Availability:
        if shutil.which(self.command[0]) is None:
            return Availability(False, f"{self.command[0]} not found (not a Jetson, or L4T tools not on PATH)")
        self._process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                         preexec_fn=pdeathsig_preexec())  # no other thread runs yet: see probe_sensors
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._first_line.wait(timeout=3.0) or self._latest is None:
            self.close()
            return Availability(False, "tegrastats printed nothing within 3 s")
        sample = self._latest
        period_note = f"documented: tegrastats prints a line every {self._interval_s * 1e3:g} ms (--interval)"
        self._metrics = [_rail_metric(rail, self._interval_s, period_note) for rail in sample.rails_mw]
        self._metrics += [Metric(f"tegrastats.{name}.temp_c", "C", "temp_c") for name in sample.temps_c]
        if sample.gpu_load_pct is not None:
            self._metrics.append(Metric("tegrastats.gpu.util_pct", "%", "util_pct"))
        if sample.gpu_freq_mhz is not None:
            self._metrics.append(Metric("tegrastats.gpu.clock_mhz", "MHz", "clock_mhz"))
        if sample.ram_used_mb is not None:
            self._metrics.append(Metric("tegrastats.ram_used_mb", "MB", "mem_mb"))
        note = sample.board_power_source or "no rails"
        return Availability(True, f"board power from {note}")

    def metrics(self) -> list[Metric]:
        return self._metrics

    def read(self) -> dict[str, float]:
        """The latest line, or an error when tegrastats has died or stopped printing: its last line must
        not be served on and on as if the board's power were constant."""
        sample = self._latest
        if sample is None:
            return {}
        if self._process is None or self._process.poll() is not None:
            raise RuntimeError("tegrastats exited")
        if time.monotonic() - self._latest_at > max(3 * self._interval_s, 1.0):
            raise RuntimeError(f"tegrastats printed nothing for {time.monotonic() - self._latest_at:.1f} s")
        values = {f"jetson.{rail}.power_w": mw / 1e3 for rail, mw in sample.rails_mw.items()}
        values.update({f"tegrastats.{name}.temp_c": c for name, c in sample.temps_c.items()})
        if sample.gpu_load_pct is not None:
            values["tegrastats.gpu.util_pct"] = sample.gpu_load_pct
        if sample.gpu_freq_mhz is not None:
            values["tegrastats.gpu.clock_mhz"] = sample.gpu_freq_mhz
        if sample.ram_used_mb is not None:
            values["tegrastats.ram_used_mb"] = sample.ram_used_mb
        return values

    def close(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None


_MIN_MAX = re.compile(r"MinFreq=(\d+)\s+MaxFreq=(\d+)")


def parse_nvpmodel(output: str) -> str | None:
    """`nvpmodel -q` prints `NV Power Mode: MAXN` (then the mode id)."""
    m = re.search(r"NV Power Mode:\s*(.+)", output)
    return m.group(1).strip() if m else None


def parse_jetson_clocks(output: str) -> bool | None:
    """`jetson_clocks --show`: clocks are pinned when every online CPU's MinFreq equals its MaxFreq."""
    pairs = _MIN_MAX.findall(output)
    if not pairs:
        return None
    return all(low == high for low, high in pairs)


def jetson_facts(root: str | Path = "/", run: Callable[[list[str]], str] | None = None) -> dict:
    """Model, L4T release, nvpmodel mode and jetson_clocks state, for the manifest (None where unknown)."""

    def _run(command: list[str]) -> str:
        if shutil.which(command[0]) is None:
            return ""
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    run = run or _run
    model = jetson_model(root)
    if model is None:
        return {}
    try:
        release = (Path(root) / "etc/nv_tegra_release").read_text().splitlines()[0].strip("# ")
    except (OSError, IndexError):
        release = None
    return {"model": model, "l4t_release": release, "nvpmodel_mode": parse_nvpmodel(run(["nvpmodel", "-q"])),
            "jetson_clocks": parse_jetson_clocks(run(["jetson_clocks", "--show"]))}
