"""Sweeps end to end: a sweep killed or interrupted halfway resumes to the records of an uninterrupted one;
compare joins runs by config id; results come out in every format, llama-bench JSON included."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_cli import edgeprof

SWEEP = """\
name: tiny
models: [synth:tiny]
quants: [q4_0, q8_0]
hyperparameters:
  batch: [1, 2]
  prompt: [16]
  gen: [8]
repetitions: 2
warmup: 0
sample_hz: 0
"""


def _identity(run_dir: Path) -> list[tuple]:
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    return sorted((r["config_id"], r["run_key"], r["repetition"], r["status"]) for r in records)


def _only_run(folder: Path) -> Path:
    (run_dir,) = [p for p in folder.iterdir() if p.is_dir()]
    return run_dir


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweep") / "tiny.yaml"
    path.write_text(SWEEP)
    return path


@pytest.fixture(scope="module")
def uninterrupted(sweep_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    result = edgeprof("sweep", str(sweep_file), "-o", str(out))
    assert result.returncode == 0, result.stderr
    return _only_run(out)


def _start(sweep_file: Path, out: Path) -> subprocess.Popen:
    """The sweep as a user starts it from a terminal. A test run started in the background by a
    non-interactive shell (`.ci/run &`) inherits SIGINT ignored, and an ignored signal stays ignored across
    exec: the sweep would never see Ctrl-C. So the child gets SIGINT's default back, as a shell's
    foreground job has it."""
    return subprocess.Popen([sys.executable, "-m", "edgeprof", "sweep", str(sweep_file), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _signal_midway(child: subprocess.Popen, out: Path, sig: int, total: int, timeout: float = 300) -> Path:
    """Send `sig` to the sweep once its first configuration is recorded and while another is still to come.
    Checking and then signalling leaves a gap in which a loaded machine can run the rest of a small sweep, so
    the sweep is frozen (SIGSTOP) for every check and the signal sent while it is frozen: it lands on a sweep
    that provably has work left. The sweep runs only between checks (20 ms apart)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        os.killpg(child.pid, signal.SIGSTOP)
        try:
            found = [r for r in out.glob("*/records.jsonl") if len(r.read_text().splitlines()) >= 2]
            if found and len(found[0].read_text().splitlines()) < total:
                os.killpg(child.pid, sig)
                return found[0].parent
            if found:
                pytest.fail("the sweep finished between two checks; it needs more configurations")
        finally:
            with contextlib.suppress(ProcessLookupError):  # after SIGKILL the group may be gone
                os.killpg(child.pid, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError("the sweep produced no records in time")


def test_killed_sweep_resumes_to_the_same_records(sweep_file, uninterrupted, tmp_path):
    child = _start(sweep_file, tmp_path)
    # once the first configuration is done, as a crash or the OOM killer would
    run_dir = _signal_midway(child, tmp_path, signal.SIGKILL, len(_identity(uninterrupted)))
    child.wait()
    assert len(_identity(run_dir)) < len(_identity(uninterrupted))
    resumed = edgeprof("sweep", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert "already finished" in resumed.stderr
    assert _identity(run_dir) == _identity(uninterrupted)  # same configs, reps and statuses; no duplicates


def test_ctrl_c_stops_cleanly_and_resume_finishes(sweep_file, uninterrupted, tmp_path):
    child = _start(sweep_file, tmp_path)
    run_dir = _signal_midway(child, tmp_path, signal.SIGINT, len(_identity(uninterrupted)))
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    assert "continue with: edgeprof sweep --resume" in stderr and "Traceback" not in stderr
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
    assert edgeprof("sweep", "--resume", str(run_dir)).returncode == 0
    assert _identity(run_dir) == _identity(uninterrupted)
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"


def test_partial_configuration_is_dropped_and_rerun(uninterrupted, tmp_path):
    import shutil

    run_dir = tmp_path / uninterrupted.name
    shutil.copytree(uninterrupted, run_dir)
    lines = (run_dir / "records.jsonl").read_text().splitlines()
    (run_dir / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # the last config lost one repetition
    resumed = edgeprof("sweep", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert "1 partial record(s) of an interrupted configuration dropped" in resumed.stderr
    assert _identity(run_dir) == _identity(uninterrupted)


def test_sweep_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [synth:tiny]\nhyperparameters:\n  batchsize: [1]\n")
    result = edgeprof("sweep", str(bad))
    assert result.returncode == 2 and "unknown hyperparameter 'batchsize'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert edgeprof("sweep", "--resume", str(tmp_path)).returncode == 2


def test_compare_joins_on_config_id_and_reports_ratios(uninterrupted, tmp_path):
    # a second run of part of the same work with different execution settings (threads) still joins
    other = edgeprof("run", "-m", "synth:tiny", "-q", "q4_0", "-b", "1", "-p", "16", "-n", "8", "-r", "2",
                     "--warmup", "0", "-t", "1", "--sample-hz", "0", "-o", str(tmp_path))
    assert other.returncode == 0, other.stderr
    second = _only_run(tmp_path)
    result = edgeprof("compare", str(uninterrupted), str(second), "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 1 and rows[0]["quant"] == "q4_0" and rows[0]["batch"] == 1
    ratio_key = next(k for k in rows[0] if "/" in k and k.endswith(":decode_tps_mean"))
    a = rows[0][next(k for k in rows[0] if k.endswith(":decode_tps_mean") and "/" not in k)]
    assert rows[0][ratio_key] > 0 and a > 0
    table = edgeprof("compare", str(uninterrupted), str(second))
    assert table.returncode == 0 and "TTFT ms" in table.stdout and "B/A" in table.stdout
    # a different workload does not join unless asked to
    third_dir = tmp_path / "third"
    assert edgeprof("run", "-m", "synth:tiny", "-q", "q4_0", "-b", "1", "-p", "16", "-n", "8", "-r", "1",
                    "--warmup", "0", "--kv-type", "q8_0", "--sample-hz", "0", "-o", str(third_dir)).returncode == 0
    third = _only_run(third_dir)
    strict = edgeprof("compare", str(second), str(third))
    assert strict.returncode == 2 and "no configuration in common" in strict.stderr and "--loose" in strict.stderr
    loose = edgeprof("compare", str(second), str(third), "--loose", "--format", "json")
    assert loose.returncode == 0 and json.loads(loose.stdout)[0]["loose"] is True


def test_results_formats_and_llama_bench_json(uninterrupted, tmp_path):
    import pandas as pd

    for fmt in ("md", "csv", "json", "jsonl"):
        result = edgeprof("results", str(uninterrupted), "--format", fmt, "-o", str(tmp_path / f"out.{fmt}"))
        assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(tmp_path / "out.csv")) == 4
    assert len(pd.read_json(tmp_path / "out.jsonl", lines=True)) == 4
    assert (tmp_path / "out.md").read_text().startswith("| model | quant |")
    bench = edgeprof("results", str(uninterrupted), "--format", "llama-bench")
    entries = json.loads(bench.stdout)
    assert len(entries) == 8  # a pp and a tg test per configuration, as llama-bench prints them
    tg = [e for e in entries if e["n_gen"] == 8]
    assert len(tg) == 4 and all(e["n_depth"] == 16 and e["n_prompt"] == 0 for e in tg)
    for entry in entries:
        assert {"model_filename", "n_threads", "n_gpu_layers", "avg_ts", "stddev_ts", "avg_ns", "samples_ts"} <= set(entry)
        assert entry["avg_ts"] > 0 and len(entry["samples_ns"]) == 2


def test_report_is_self_contained_html_with_figures(uninterrupted, tmp_path):
    result = edgeprof("report", str(uninterrupted), "-o", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2  # decode vs batch and memory at least
    assert "http://" not in page and "https://" not in page and "<link" not in page  # nothing fetched
    assert (tmp_path / "report" / "decode_vs_batch.png").stat().st_size > 1000
    assert "No data for this figure" in page  # no power sensor here: said, not drawn
