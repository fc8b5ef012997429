"""Fault A.1 of issue 22: the head dies (kill -9) between two configurations of a fleet sweep.

Every configuration the sweep had not confirmed must be recorded `lost` (never `failed`), the sweep must
end normally (a result, a `status` in each manifest, a summary; no engine traceback), and `--resume` must
run exactly the lost configurations again once a head and the device are back. Gated on events: the head
is killed when the first configuration's records have been written, and the test waits for the device to
join again before resuming."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from edgeprof.fleet.credentials import init_credentials  # noqa: E402
from edgeprof.fleet.head import connect, list_devices  # noqa: E402
from edgeprof.results.records import read_records  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Fleet:
    """A head and one emulated device, each its own `edgeprof fleet ...` process, as users run them."""

    def __init__(self, root: Path):
        self.root = root
        self.credentials = init_credentials(root / "credentials")
        self.address = f"tls://127.0.0.1:{_free_port()}"
        self.processes: list[subprocess.Popen] = []

    def _spawn(self, args: list[str], log: str, env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "edgeprof", *args], stdout=open(self.root / log, "a"),
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.processes.append(proc)
        return proc

    def head(self) -> subprocess.Popen:
        return self._spawn(["fleet", "head", "--address", self.address, "--credentials",
                            str(self.credentials.folder)], "head.log")

    def join(self, name: str) -> subprocess.Popen:
        return self._spawn(["fleet", "join", self.address, "--device", "raspberry-pi-5", "--emulate", "--name", name,
                            "--store", str(self.root / f"store-{name}"), "--credentials",
                            str(self.credentials.folder)], f"{name}.log",
                           {"EDGEPROF_CACHE": str(self.root / f"cache-{name}")})

    def wait_joined(self, name: str, attempts: int = 600) -> None:
        """Until `name` is joined (each attempt is one round trip to the head, or one refused connection)."""
        for _ in range(attempts):
            try:
                client = connect(self.address, self.credentials, timeout_s=5)
            except Exception:  # noqa: BLE001 - the head is still starting
                time.sleep(0.2)
                continue
            try:
                if name in {d.name for d in list_devices(client)}:
                    return
            finally:
                client.close()
            time.sleep(0.2)
        raise AssertionError(f"{name} did not join")

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def fleet(tmp_path):
    fleet = _Fleet(tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop()


SWEEP = """name: head-dies
models: [synth:tiny]
quants: [q4_0, q8_0, q4_k_m, q5_0, q5_k_m, q6_k]
hyperparameters:
  prompt: [16]
  gen: [8]
repetitions: 2
warmup: 0
sample_hz: 0
idle_s: 0
fidelity: false
energy_window_s: 0
"""
CONFIGURATIONS, REPETITIONS = 6, 2


def _records_on_disk(out: Path, sweep: subprocess.Popen, count: int) -> list[dict]:
    """Wait until the sweep has written `count` records (the event the head is killed on)."""
    while sweep.poll() is None:
        for path in out.glob("fleet-*/solo/records.jsonl"):
            records = read_records(path)
            if len(records) >= count:
                return records
        time.sleep(0.05)
    raise AssertionError("the sweep ended before its first configuration's records were written")


def test_a_head_killed_between_configurations_leaves_them_lost_and_resume_reruns_exactly_those(fleet, tmp_path):
    head = fleet.head()
    device = fleet.join("solo")
    fleet.wait_joined("solo")
    (tmp_path / "sweep.yaml").write_text(SWEEP)
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "edgeprof", "sweep"]
    creds = ["--credentials", str(fleet.credentials.folder)]
    sweep = subprocess.Popen([*cli, str(tmp_path / "sweep.yaml"), "--fleet", fleet.address, "--out", str(out), *creds],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _records_on_disk(out, sweep, REPETITIONS)
        head.send_signal(signal.SIGKILL)  # the head's machine dies after the first configuration's records
        head.wait()
        stdout, stderr = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert "Traceback" not in stderr + stdout and " - ERROR - " not in stderr, stderr  # no engine logs either
    assert "head stopped answering" in stderr, stderr  # one line says what ended the sweep
    assert sweep.returncode == 1, (sweep.returncode, stderr)
    assert "sweep --resume" in stderr and "solo" in stdout  # how to continue, and the device's summary
    [run_dir] = out.glob("fleet-*/solo")
    records = read_records(run_dir / "records.jsonl")
    statuses = [r["status"] for r in records]
    assert set(statuses) <= {"ok", "lost"}, records  # nothing the device did not confirm is `failed`
    ok_keys = {r["run_key"] for r in records if r["status"] == "ok"}
    lost_keys = {r["run_key"] for r in records if r["status"] == "lost"}
    assert lost_keys and len(ok_keys | lost_keys) == CONFIGURATIONS and not ok_keys & lost_keys
    assert statuses.count("ok") == len(ok_keys) * REPETITIONS
    assert all("resume" in r["error"] for r in records if r["status"] == "lost")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"].startswith("incomplete") and (run_dir / "summary.csv").exists()
    kept = {(r["run_key"], r["repetition"], r["started_at"]) for r in records if r["status"] == "ok"}

    # A new head at the same address, the device back (killed and joined again: reconnecting is not this test's)
    device.send_signal(signal.SIGKILL)
    device.wait()
    fleet.head()
    fleet.join("solo")
    fleet.wait_joined("solo")
    resumed = subprocess.run([*cli, "--resume", str(run_dir.parent), *creds], capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    records = read_records(run_dir / "records.jsonl")
    assert [r["status"] for r in records] == ["ok"] * (CONFIGURATIONS * REPETITIONS)
    assert {r["run_key"] for r in records} == ok_keys | lost_keys
    # the confirmed configurations were not measured again: their records are the same lines
    assert kept <= {(r["run_key"], r["repetition"], r["started_at"]) for r in records}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["resumed"][-1]["finished_before"] == len(ok_keys)
