"""Runs join across devices on what was run: the artifact's bytes, never how a device ran it."""

from __future__ import annotations

import json

from run_dirs import CPU_DEVICE, GPU_DEVICE, SHA, make_run, workload
from test_cli import edgeprof

from edgeprof.analysis.compare import join, load_run, merge_by_device

FILE = "/models/synth-llama-3.2-1b.q4_k_m.gguf"


def test_a_preset_and_its_file_by_path_join_on_the_artifact_sha(tmp_path):
    edge = make_run(tmp_path, "edge-run", CPU_DEVICE, [workload(threads=4, gpu_layers=0,
                                                               repetitions=[{"decode_tps": 10.0}])])
    server = make_run(tmp_path, "server-run", GPU_DEVICE, [workload(path=FILE, threads=16, gpu_layers=-1,
                                                                    repetitions=[{"decode_tps": 450.0}])])
    runs = [load_run(edge), load_run(server)]
    assert runs[0].rows[0]["config_id"] != runs[1].rows[0]["config_id"]  # what joined nothing before
    (item,) = join(runs)
    assert item.identity["model"] == "synth:llama-3.2-1b"  # the preset's name, not the file's stem
    assert item.basis.startswith("same artifact (sha256 abab")
    result = edgeprof("compare", str(edge), str(server), "--format", "json", "--no-predicted")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["h200/raspberry-pi-5:decode_tps_mean"] == 45.0
    # threads and GPU layers never split a workload: they are shown beside each side
    assert row["raspberry-pi-5:settings"].startswith("threads 4 · GPU layers 0")
    assert row["h200:settings"].startswith("threads 16 · GPU layers -1")
    assert "provider" not in row["h200:settings"]  # not a llama.cpp setting


def test_different_bytes_under_one_file_name_do_not_join(tmp_path):
    edge = make_run(tmp_path, "a", CPU_DEVICE, [workload(path=FILE, sha256="01" * 32)])
    server = make_run(tmp_path, "b", GPU_DEVICE, [workload(path=FILE, sha256="02" * 32)])
    assert join([load_run(edge), load_run(server)]) == []
    strict = edgeprof("compare", str(edge), str(server))
    assert strict.returncode == 2 and "no configuration in common" in strict.stderr


def test_records_without_sha256_still_join_on_config_id(tmp_path):
    """Run directories written before records carried sha256 keep joining as they did."""
    edge = make_run(tmp_path, "a", CPU_DEVICE, [workload(sha256=None, batch=2)])
    server = make_run(tmp_path, "b", GPU_DEVICE, [workload(sha256=None, batch=2), workload(sha256=None, batch=4)])
    (item,) = join([load_run(edge), load_run(server)])
    assert item.identity["batch"] == 2 and "configuration id" in item.basis


def test_a_workload_run_under_several_settings_shows_the_fastest_and_says_so(tmp_path):
    edge = make_run(tmp_path, "a", CPU_DEVICE, [
        workload(threads=1, repetitions=[{"decode_tps": 4.0}]), workload(threads=4, repetitions=[{"decode_tps": 9.0}])])
    server = make_run(tmp_path, "b", GPU_DEVICE, [workload(path=FILE, repetitions=[{"decode_tps": 90.0}])])
    (item,) = join([load_run(edge), load_run(server)])
    assert item.by_run[0]["threads"] == 4 and item.choices == [2, 1]


def test_runs_of_one_device_merge_into_one_side_edge_first(tmp_path):
    server = make_run(tmp_path, "s", GPU_DEVICE, [workload(batch=1)])
    edge_batch = make_run(tmp_path, "e1", CPU_DEVICE, [workload(batch=1)])
    edge_prompt = make_run(tmp_path, "e2", CPU_DEVICE, [workload(prompt_tokens=512)])
    sides = merge_by_device([load_run(p) for p in (server, edge_batch, edge_prompt)])
    assert [side.device_name for side in sides] == ["raspberry-pi-5", "h200"]
    assert len(sides[0].rows) == 2 and len(sides[0].paths) == 2
