"""No worker outlives edgeprof: SIGTERM and SIGKILL to `edgeprof sweep` mid-configuration end its worker
within 2 s, and `--resume` then completes the run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

# One configuration of the tiny model long enough to be caught mid-way: 12 repetitions of 1500 decode steps.
SWEEP = """
name: lifetime
models: [synth:tiny]
quants: [q4_0]
hyperparameters:
  prompt: [16]
  gen: [1500]
  threads: [1]
repetitions: 12
warmup: 0
fidelity: false
sample_hz: 0
idle_s: 0
"""


def _worker_of(parent: subprocess.Popen, deadline_s: float = 90.0) -> psutil.Process:
    """The worker process, once it has recorded its first repetition (so it is mid-configuration)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert parent.poll() is None, parent.stderr.read() if parent.stderr else "edgeprof ended early"
        for child in psutil.Process(parent.pid).children(recursive=True):
            try:
                cmdline = child.cmdline()
            except psutil.Error:
                continue
            if "edgeprof.bench.worker" in cmdline:
                events = Path(cmdline[-1])
                if events.exists() and '"repetition"' in events.read_text():
                    return child
        time.sleep(0.1)
    pytest.fail("the worker did not start a repetition in time")


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_worker_dies_with_edgeprof_and_resume_completes(tmp_path, sig):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(SWEEP)
    out = tmp_path / "runs"
    parent = subprocess.Popen([sys.executable, "-m", "edgeprof", "sweep", str(sweep), "-o", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        worker = _worker_of(parent)
        os.kill(parent.pid, sig)
        time.sleep(2.0)
        assert _gone(worker), f"worker {worker.pid} outlived edgeprof by 2 s after {sig.name}"
        code = parent.wait(timeout=30)
    finally:
        if parent.poll() is None:
            parent.kill()
    (run_dir,) = list(out.iterdir())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    if sig == signal.SIGTERM:
        assert code == 128 + signal.SIGTERM  # an orderly stop, as for Ctrl-C
        assert manifest["status"] == "interrupted"
    else:
        assert code == -signal.SIGKILL
    resumed = subprocess.run([sys.executable, "-m", "edgeprof", "sweep", "--resume", str(run_dir)],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok"] * 12
