"""Jetson power modes as a sweep axis: switch `nvpmodel` (and `jetson_clocks` where asked) before each
configuration, wait until the clocks read stable, and put the board back as it was on every exit.

A mode below MAXN can win on tokens per joule, so `power_mode: [MAXN, 25W, 15W]` runs each configuration
under each mode. The board's own modes are the names and ids in `/etc/nvpmodel.conf`
(`< POWER_MODEL ID=1 NAME=15W >`). After `nvpmodel -m ID` the governors move the clocks to the mode's
caps over a few hundred milliseconds; a configuration starts only once every CPU's and the GPU's
frequency files in sysfs read the same `stable_reads` polls in a row (bounded: after `settle_polls`
the record says the clocks had not settled). The mode found at the start is restored at the end, on
Ctrl-C, on a crash and on SIGTERM/SIGHUP (which edgeprof turns into an orderly stop): `PowerModes` is a
context manager, and `execute` runs the whole sweep inside it. A SIGKILL cannot be caught; the manifest
names the original mode so it can be set back by hand.

Switching needs root. Without it, or on a device that is not a Jetson, or for a mode the board does
not list, the run is refused before anything runs, in one line. Commands are argv lists: a mode name
from a sweep file never reaches a shell.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edgeprof.errors import ConfigError
from edgeprof.hardware.board import jetson_model, run_command

_MODEL = re.compile(r"<\s*POWER_MODEL\s+ID\s*=\s*(\d+)\s+NAME\s*=\s*([^\s>]+)\s*>")
_QUERY = re.compile(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)")
COMMAND_TIMEOUT_S = 60.0

Run = Callable[[list[str], str], tuple[int, str]]


class PowerModeError(ConfigError):
    """A power mode that cannot be set here: not a Jetson, no permission, a mode the board lacks."""


def parse_nvpmodel_conf(text: str) -> dict[str, int]:
    """Mode names to ids from `/etc/nvpmodel.conf`, in the file's order."""
    return {name: int(mode_id) for mode_id, name in _MODEL.findall(text)}


def parse_nvpmodel_query(output: str) -> tuple[str, int] | None:
    """(name, id) from `nvpmodel -q` ("NV Power Mode: MAXN" then the id on the next line)."""
    match = _QUERY.search(output)
    return (match.group(1), int(match.group(2))) if match else None


def run_tool(argv: list[str], stdin: str = "") -> tuple[int, str]:
    """nvpmodel or jetson_clocks; `stdin` answers prompts (nvpmodel asks before a reboot: edgeprof says no)."""
    return run_command(argv, stdin, COMMAND_TIMEOUT_S)


def clock_files(root: Path) -> list[Path]:
    """The frequency files whose readings must be stable: every CPU's current and maximum frequency and
    each devfreq device's (the GPU's on a Jetson)."""
    files = sorted(root.glob("sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq"))
    files += sorted(root.glob("sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_max_freq"))
    files += sorted(root.glob("sys/class/devfreq/*/cur_freq")) + sorted(root.glob("sys/class/devfreq/*/max_freq"))
    return files


def read_clocks(files: list[Path]) -> tuple[str, ...]:
    out = []
    for path in files:
        try:
            out.append(path.read_text().strip())
        except OSError:
            out.append("")
    return tuple(out)


def _permission_denied(output: str) -> bool:
    lowered = output.lower()
    return any(marker in lowered for marker in ("permission", "root", "not permitted", "sudo"))


class PowerModes:
    """Switches a Jetson's power mode for each configuration and restores the original on exit."""

    def __init__(self, root: str | Path = "/", nvpmodel: str = "nvpmodel", jetson_clocks: str = "jetson_clocks",
                 pin_clocks: bool = False, run: Run = run_tool, euid: Callable[[], int] = os.geteuid,
                 sleep: Callable[[float], None] = time.sleep, poll_s: float = 0.2, stable_reads: int = 3,
                 settle_polls: int = 150):
        """`root`, `nvpmodel`, `jetson_clocks`: a fake tree and fake executables in tests. `pin_clocks`: run
        `jetson_clocks` after each switch (its settings are stored first and restored at the end).
        Settling polls every `poll_s` and gives up after `settle_polls` polls (30 s by default)."""
        self.root = Path(root)
        self.nvpmodel = nvpmodel
        self.jetson_clocks = jetson_clocks
        self.pin_clocks = pin_clocks
        self._run = run
        self._euid = euid
        self._sleep = sleep
        self.poll_s = poll_s
        self.stable_reads = stable_reads
        self.settle_polls = settle_polls
        self.modes: dict[str, int] = {}
        self.original: tuple[str, int] | None = None
        self.current: int | None = None
        self._stored_clocks: Path | None = None
        self.log: list[dict] = []  # each switch: mode, whether clocks settled, polls taken

    # -- checks ---------------------------------------------------------------------------------
    def check(self, wanted: list[str], device: str, emulated: bool) -> None:
        """Refuse, in one line, what cannot run: an emulated or non-Jetson device, no nvpmodel, a mode the
        board does not list, no permission to switch."""
        if emulated:
            raise PowerModeError(f"--power-mode cannot be emulated: it sets a real board's clocks and power caps "
                                 f"(drop --emulate and run on the {device} itself)")
        if not jetson_model(self.root):
            raise PowerModeError(f"--power-mode switches a Jetson's nvpmodel; this host ({device}) is not a Jetson")
        if shutil.which(self.nvpmodel) is None:
            raise PowerModeError(f"--power-mode needs {self.nvpmodel}, which is not on PATH (it ships with L4T)")
        self._load_modes()
        for mode in wanted:
            self.mode_id(mode)
        if self._euid() != 0:
            raise PowerModeError("--power-mode needs root to switch nvpmodel: run edgeprof with sudo, or set the "
                                 "mode yourself (sudo nvpmodel -m ID) and drop --power-mode")
        if self.pin_clocks and shutil.which(self.jetson_clocks) is None:
            raise PowerModeError(f"--jetson-clocks needs {self.jetson_clocks}, which is not on PATH")

    def _load_modes(self) -> None:
        try:
            self.modes = parse_nvpmodel_conf((self.root / "etc/nvpmodel.conf").read_text())
        except OSError as exc:
            raise PowerModeError(f"--power-mode: cannot read {self.root / 'etc/nvpmodel.conf'} ({exc.strerror})") from None

    def mode_id(self, mode: str) -> int:
        """The board's id of a mode given by name (any case) or id."""
        mode = str(mode)
        by_name = {name.lower(): mode_id for name, mode_id in self.modes.items()}
        if mode.lower() in by_name:
            return by_name[mode.lower()]
        if mode.isdigit() and int(mode) in self.modes.values():
            return int(mode)
        offered = ", ".join(f"{name} ({mode_id})" for name, mode_id in self.modes.items())
        raise PowerModeError(f"power mode {mode!r} is not one of this board's: {offered}")

    # -- switching ------------------------------------------------------------------------------
    def __enter__(self) -> "PowerModes":
        if not self.modes:
            self._load_modes()
        code, output = self._run([self.nvpmodel, "-q"], "")
        found = parse_nvpmodel_query(output) if code == 0 else None
        if found is None:
            raise PowerModeError(f"nvpmodel -q did not say the current mode ({output.strip()[:120] or code})")
        self.original, self.current = found, found[1]
        if self.pin_clocks:
            handle, name = tempfile.mkstemp(prefix="edgeprof-jetson-clocks-")
            os.close(handle)
            self._stored_clocks = Path(name)
            self._checked([self.jetson_clocks, "--store", name], "jetson_clocks --store")
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def apply(self, mode: str) -> dict:
        """Set `mode` (if the board is not in it already), pin clocks where asked, wait for the clocks to
        read stable; what the record says of it."""
        mode_id = self.mode_id(mode)
        if mode_id != self.current:
            self._checked([self.nvpmodel, "-m", str(mode_id)], f"nvpmodel -m {mode_id}")
            self.current = mode_id
            if self.pin_clocks:
                self._checked([self.jetson_clocks], "jetson_clocks")
        settled, polls = self.settle()
        entry = {"power_mode": mode, "power_mode_id": mode_id, "clocks_settled": settled, "settle_polls": polls,
                 "jetson_clocks": self.pin_clocks}
        self.log.append(entry)
        return entry

    def settle(self) -> tuple[bool, int]:
        """Poll the clock files until they read the same `stable_reads` times in a row; (settled, polls)."""
        files = clock_files(self.root)
        if not files:
            return False, 0
        last, same = read_clocks(files), 1
        for polls in range(1, self.settle_polls + 1):
            if same >= self.stable_reads:
                return True, polls - 1
            self._sleep(self.poll_s)
            now = read_clocks(files)
            same = same + 1 if now == last else 1
            last = now
        return same >= self.stable_reads, self.settle_polls

    def restore(self) -> None:
        """Back to the mode (and clocks) found at the start; safe to call twice."""
        if self.original is not None and self.current != self.original[1]:
            self._run([self.nvpmodel, "-m", str(self.original[1])], "NO\n")
            self.current = self.original[1]
        if self._stored_clocks is not None:
            self._run([self.jetson_clocks, "--restore", str(self._stored_clocks)], "")
            self._stored_clocks.unlink(missing_ok=True)
            self._stored_clocks = None

    def _checked(self, argv: list[str], what: str) -> None:
        code, output = self._run(argv, "NO\n")
        if "reboot" in output.lower() and "required" in output.lower():
            raise PowerModeError(f"{what}: the board needs a reboot to enter this mode; set it yourself, reboot, "
                                 "and run without --power-mode")
        if code != 0:
            if _permission_denied(output):
                raise PowerModeError(f"{what}: not permitted; run edgeprof with sudo")
            raise PowerModeError(f"{what} failed (exit {code}): {output.strip()[:200]}")

    def describe(self) -> dict:
        """For the manifest: the mode found and restored, and each switch."""
        return {"original": {"name": self.original[0], "id": self.original[1]} if self.original else None,
                "jetson_clocks": self.pin_clocks, "switches": self.log}
