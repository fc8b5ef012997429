"""Jetson power modes as an axis, on a fake nvpmodel, a fake jetson_clocks and a fake sysfs tree: switching,
settling on stable clocks, and the original mode restored on every way out (end, crash, Ctrl-C, SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprof.hardware.power_modes import PowerModeError, PowerModes, parse_nvpmodel_conf, parse_nvpmodel_query
from fake_sensors import write

# /etc/nvpmodel.conf of an Orin Nano (JetPack 6.2), its mode lines; the rest of the file is settings per mode.
CONF = """
< POWER_MODEL ID=0 NAME=15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=7W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
CPU_ONLINE CORE_0 1
< PM_CONFIG DEFAULT=2 >
"""
CPU_MAX_KHZ = {0: 1497600, 1: 960000, 2: 1728000}  # each mode's CPU cap, written by the fake nvpmodel


def _executable(path: Path, body: str) -> str:
    path.write_text(f"#!{sys.executable}\nimport json, sys\nfrom pathlib import Path\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture()
def board(tmp_path):
    """A fake Jetson root (device tree, nvpmodel.conf, cpufreq and devfreq files) and fake L4T tools that
    log every call and move the fake clocks as the real ones would."""
    root = tmp_path / "root"
    write(root / "proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\x00")
    write(root / "etc/nvpmodel.conf", CONF)
    for cpu in range(2):
        write(root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_max_freq", str(CPU_MAX_KHZ[2]))
        write(root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", str(CPU_MAX_KHZ[2]))
    write(root / "sys/class/devfreq/17000000.gpu/cur_freq", "1020000000")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"mode": 2, "calls": []}))
    names = {0: "15W", 1: "7W", 2: "MAXN_SUPER"}
    nvpmodel = _executable(tmp_path / "nvpmodel", f"""
state_path = Path({str(state)!r}); state = json.loads(state_path.read_text())
state["calls"].append(["nvpmodel", *sys.argv[1:]])
names = {names!r}; caps = {CPU_MAX_KHZ!r}
if sys.argv[1] == "-q":
    print("NV Power Mode: " + names[state["mode"]]); print(state["mode"])
elif sys.argv[1] == "-m":
    if state.get("denied"):
        print("NVPM ERROR: failed to write: Permission denied"); state_path.write_text(json.dumps(state)); sys.exit(1)
    state["mode"] = int(sys.argv[2])
    for cpu in range(2):
        for name in ("scaling_max_freq", "scaling_cur_freq"):
            Path({str(root)!r}, f"sys/devices/system/cpu/cpu{{cpu}}/cpufreq/{{name}}").write_text(str(caps[state["mode"]]))
state_path.write_text(json.dumps(state))
""")
    jetson_clocks = _executable(tmp_path / "jetson_clocks", f"""
state_path = Path({str(state)!r}); state = json.loads(state_path.read_text())
state["calls"].append(["jetson_clocks", *sys.argv[1:]])
if sys.argv[1:2] == ["--store"]:
    Path(sys.argv[2]).write_text("stored")
state_path.write_text(json.dumps(state))
""")

    class Board:
        def __init__(self):
            self.root, self.nvpmodel, self.jetson_clocks, self.state = root, nvpmodel, jetson_clocks, state

        def mode(self) -> int:
            return json.loads(state.read_text())["mode"]

        def calls(self) -> list[list[str]]:
            return json.loads(state.read_text())["calls"]

        def deny(self) -> None:
            data = json.loads(state.read_text())
            data["denied"] = True
            state.write_text(json.dumps(data))

        def switch(self, **kwargs) -> PowerModes:
            options = {"euid": lambda: 0, "sleep": lambda s: None, **kwargs}
            return PowerModes(root, nvpmodel, jetson_clocks, **options)

    return Board()


def test_conf_and_query_parsing():
    assert parse_nvpmodel_conf(CONF) == {"15W": 0, "7W": 1, "MAXN_SUPER": 2}
    assert parse_nvpmodel_query("NV Power Mode: MAXN\n0\n") == ("MAXN", 0)


def test_switches_settles_records_and_restores_at_the_end(board):
    power = board.switch()
    power.check(["15W", "7w", "2"], "jetson-orin-nano-8gb", emulated=False)
    with power:
        first = power.apply("15W")
        assert board.mode() == 0
        assert (board.root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq").read_text() == "1497600"
        assert first == {"power_mode": "15W", "power_mode_id": 0, "clocks_settled": True, "settle_polls": 2,
                         "jetson_clocks": False}
        power.apply("15W")  # already there: no second switch
        power.apply("7w")
        assert board.mode() == 1
    assert board.mode() == 2  # MAXN_SUPER again
    switches = [c for c in board.calls() if c[:2] == ["nvpmodel", "-m"]]
    assert switches == [["nvpmodel", "-m", "0"], ["nvpmodel", "-m", "1"], ["nvpmodel", "-m", "2"]]
    assert power.describe()["original"] == {"name": "MAXN_SUPER", "id": 2}


def test_settling_waits_for_stable_clocks_and_is_bounded(board):
    cur = board.root / "sys/class/devfreq/17000000.gpu/cur_freq"
    steps = iter(["800000000", "900000000", "1020000000"])

    def ramp(_seconds):  # each poll, the GPU clock moves on until it reaches the cap: three events, then still
        cur.write_text(next(steps, "1020000000"))

    settled, polls = board.switch(sleep=ramp, stable_reads=3).settle()
    assert settled and polls == 5  # 3 changes, then 2 more polls to read the same value 3 times in a row
    counter = iter(range(10**6))
    never = board.switch(sleep=lambda _s: cur.write_text(str(next(counter))), settle_polls=20)
    assert never.settle() == (False, 20)


def test_jetson_clocks_stored_pinned_and_restored(board):
    power = board.switch(pin_clocks=True)
    power.check(["15W"], "jetson-orin-nano-8gb", emulated=False)
    with power:
        power.apply("15W")
    calls = [c for c in board.calls() if c[0] == "jetson_clocks"]
    assert [c[:2] for c in calls] == [["jetson_clocks", "--store"], ["jetson_clocks"], ["jetson_clocks", "--restore"]]
    assert calls[0][2] == calls[2][2] and not Path(calls[0][2]).exists()  # the stored settings, then cleaned up


@pytest.mark.parametrize("raised", [RuntimeError("worker exploded"), KeyboardInterrupt()])
def test_restored_on_a_crash_and_on_ctrl_c(board, raised):
    power = board.switch()
    with pytest.raises(type(raised)):
        with power:
            power.apply("7W")
            assert board.mode() == 1
            raise raised
    assert board.mode() == 2


def test_restored_on_sigterm(board, tmp_path):
    """A real process under edgeprof's stop_signals: SIGTERM becomes an orderly stop, the mode goes back."""
    script = tmp_path / "child.py"
    script.write_text(f"""
import sys, threading
from edgeprof.lifetime import stop_signals
from edgeprof.hardware.power_modes import PowerModes
power = PowerModes({str(board.root)!r}, {board.nvpmodel!r}, {board.jetson_clocks!r}, euid=lambda: 0, sleep=lambda s: None)
with stop_signals(), power:
    power.apply("7W")
    print("switched", flush=True)
    threading.Event().wait()
""")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout.readline().strip() == "switched"  # the event: it is in 7W now
    assert board.mode() == 1
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) != 0
    assert board.mode() == 2


def test_refusals_are_one_line(board, tmp_path):
    with pytest.raises(PowerModeError, match="needs root"):
        board.switch(euid=lambda: 1000).check(["15W"], "jetson-orin-nano-8gb", emulated=False)
    with pytest.raises(PowerModeError, match=r"'25W' is not one of this board's: 15W \(0\), 7W \(1\), MAXN_SUPER \(2\)"):
        board.switch().check(["25W"], "jetson-orin-nano-8gb", emulated=False)
    with pytest.raises(PowerModeError, match="cannot be emulated"):
        board.switch().check(["15W"], "jetson-orin-nano-8gb", emulated=True)
    not_jetson = PowerModes(tmp_path / "empty", board.nvpmodel, euid=lambda: 0)
    with pytest.raises(PowerModeError, match=r"this host \(generic-x86-64\) is not a Jetson"):
        not_jetson.check(["15W"], "generic-x86-64", emulated=False)
    board.deny()  # root, but the write is refused all the same (a locked-down container)
    power = board.switch()
    power.check(["15W"], "jetson-orin-nano-8gb", emulated=False)
    with pytest.raises(PowerModeError, match="not permitted; run edgeprof with sudo"):
        with power:
            power.apply("15W")


def test_cli_refuses_the_axis_on_this_host(tmp_path):
    from edgeprof.hardware.board import jetson_model

    if jetson_model("/"):
        pytest.skip("this host is a Jetson")
    result = subprocess.run([sys.executable, "-m", "edgeprof", "run", "-m", "synth:tiny", "-q", "f32", "-p", "8", "-n",
                             "4", "--power-mode", "15W", "--idle-s", "0", "-o", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "is not a Jetson" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
