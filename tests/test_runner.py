import json
import signal
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgeprof.bench.plan import expand
from edgeprof.bench.runner import Runner, RunOptions, _failure
from edgeprof.errors import ConfigError
from edgeprof.results.records import read_records
from edgeprof.results.rundir import create_run_dir
from edgeprof.results.summary import summarize

SMALL = {"batch": [1], "prompt_tokens": [16], "gen_tokens": [8], "threads": [2]}
DEVICE = {"profile": "test", "emulated": False}


def _run(tmp_path, configs, **options):
    run_dir = create_run_dir(tmp_path)
    Runner(run_dir, DEVICE, RunOptions(**{"repetitions": 2, "warmup": 0, **options})).run(configs)
    return read_records(run_dir.records_path)


def test_records_carry_every_setting_and_metric(tmp_path):
    records = _run(tmp_path, expand(["synth:tiny"], ["q4_0"], ["llama.cpp"], {**SMALL, "batch": [1, 2]}))
    assert [r["status"] for r in records] == ["ok"] * 4
    record = records[-1]
    assert record["hyperparameters"]["batch"] == 2 and record["hyperparameters"]["threads"] == 2
    assert record["model"]["quant"] == "q4_0" and len(record["model"]["sha256"]) == 64
    metrics = record["metrics"]
    for key in ("ttft_ms", "prefill_tps", "decode_tps", "itl_ms_p50", "itl_ms_p99", "e2e_ms", "peak_rss_mb"):
        assert metrics[key] > 0, key
    assert metrics["decoded_tokens_total"] == 16 and metrics["prompt_tokens_total"] == 32
    assert metrics["itl_ms_p50"] <= metrics["itl_ms_p99"]
    rows = summarize(records)
    assert len(rows) == 2 and all(r["repetitions"] == 2 for r in rows)


def test_peak_rss_is_the_workers_own_not_the_parents(tmp_path):
    """Linux carries ru_maxrss across fork and exec: a parent holding 1.2 GB made every worker report
    1.2 GB. The tiny model's worker (Python, numpy, llama.cpp, a 1 MB model) stays far below 600 MB."""
    ballast = np.ones(1200 * 2**20 // 8)  # touched: 1.2 GB resident in this (the parent) process
    try:
        (record,) = _run(tmp_path, expand(["synth:tiny"], ["q4_0"], ["llama.cpp"], SMALL), repetitions=1)
    finally:
        del ballast
    assert 20 < record["metrics"]["peak_rss_mb"] < 600


def test_config_id_ignores_execution_settings_but_run_key_does_not(tmp_path):
    configs = expand(["synth:tiny"], ["q4_0"], ["llama.cpp"], {**SMALL, "threads": [1, 2]})
    records = _run(tmp_path, configs, repetitions=1)
    assert records[0]["config_id"] == records[1]["config_id"]
    assert records[0]["run_key"] != records[1]["run_key"]


def _broken_gguf(tmp_path: Path, tiny_gguf_f32) -> Path:
    """A structurally whole GGUF that llama.cpp refuses (a tensor with the wrong shape)."""
    reader = gguf.GGUFReader(tiny_gguf_f32.path)
    writer = gguf.GGUFWriter(tmp_path / "broken.gguf", "llama")
    for key, field in reader.fields.items():
        if key.startswith("llama.") and not key.endswith("rope.dimension_count"):
            value = field.contents()
            if isinstance(value, int):
                writer.add_uint32(key, value)
            elif isinstance(value, float):
                writer.add_float32(key, value)
    writer.add_tensor("token_embd.weight", np.zeros((3, 5), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tmp_path / "broken.gguf"


def test_native_load_failure_is_a_failed_record_and_the_sweep_goes_on(tmp_path, tiny_gguf_f32):
    broken = _broken_gguf(tmp_path, tiny_gguf_f32)
    configs = expand([str(broken), "synth:tiny"], ["q4_0"], ["llama.cpp"], SMALL)
    records = _run(tmp_path, configs)
    assert records[0]["status"] == "failed" and records[0]["repetition"] is None
    assert "could not load" in records[0]["error"] or "llama.cpp" in records[0]["error"]
    assert [r["status"] for r in records[1:]] == ["ok", "ok"]


def test_timeout_becomes_a_timeout_record(tmp_path):
    configs = expand(["synth:tiny"], ["q4_0"], ["llama.cpp"], {**SMALL, "gen_tokens": [100000], "context": [0]},
                     allow_long_context=True)  # past the trained 2048 on purpose: a run that cannot finish in 3 s
    records = _run(tmp_path, configs, timeout_s=3)
    assert records[-1]["status"] == "timeout"


def test_failure_classification(tmp_path):
    stderr = tmp_path / "err.log"
    stderr.write_text("ggml_abort: GGML_ASSERT(x) failed\n")
    assert _failure(-signal.SIGABRT, False, [], stderr, 10)[0] == "failed"
    assert "SIGABRT" in _failure(-signal.SIGABRT, False, [], stderr, 10)[1]
    assert _failure(-signal.SIGKILL, False, [], stderr, 10)[0] == "oom"
    stderr.write_text("ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 99\n")
    assert _failure(1, False, [], stderr, 10)[0] == "oom"
    assert _failure(None, True, [], stderr, 10)[0] == "timeout"


@pytest.mark.parametrize("grid,message", [
    ({"batch": [0]}, "batch must be > 0"),
    ({"prompt_tokens": [100], "gen_tokens": [50], "context": [128]}, "exceed the context"),
    ({"kv_type": ["f8"]}, "KV-cache type"),
])
def test_invalid_hyperparameters_fail_before_running(grid, message):
    with pytest.raises(ConfigError, match=message):
        expand(["synth:tiny"], ["q4_0"], ["llama.cpp"], grid)


def test_events_of_a_crashed_worker_keep_finished_repetitions(tmp_path):
    events = tmp_path / "e.jsonl"
    events.write_text(json.dumps({"event": "repetition", "index": 0, "metrics": {}, "phases": {}, "finished_at": 1.0})
                      + "\n{\"event\": \"rep")
    from edgeprof.bench.contracts import Repetition, read_events

    (event,) = read_events(events)
    assert isinstance(event, Repetition) and event.index == 0


def test_long_context_is_refused_unless_asked_for():
    with pytest.raises(ConfigError, match="--allow-long-context"):
        expand(["synth:tiny"], ["q4_0"], ["llama.cpp"], {**SMALL, "prompt_tokens": [2000], "gen_tokens": [64]})
    (config,) = expand(["synth:tiny"], ["q4_0"], ["llama.cpp"], {**SMALL, "prompt_tokens": [2000], "gen_tokens": [64]},
                       allow_long_context=True)
    assert config.hp.context_per_sequence == 2064


def test_progress_reaches_the_parent_while_the_worker_runs(tmp_path):
    """The warm-up prefill reports its tokens (8 llama_decode calls of 128), each repetition its number."""
    events = []
    run_dir = create_run_dir(tmp_path)
    configs = expand(["synth:tiny"], ["q4_0"], ["llama.cpp"],
                     {**SMALL, "prompt_tokens": [1024], "n_batch": [128], "n_ubatch": [128]})
    Runner(run_dir, DEVICE, RunOptions(repetitions=2, warmup=1),
           notify=lambda name, **info: events.append((name, info))).run(configs)
    steps = [info for name, info in events if name == "config_progress"]  # what the 0.5 s polls caught
    (events_file,) = [p for p in (run_dir.path / "jobs").glob("*.events.jsonl") if ".fidelity." not in p.name]
    written = [json.loads(line) for line in events_file.read_text().splitlines()]
    progress = [e for e in written if e["event"] == "progress"]
    assert {"step": "warm-up prefill", "done": 1024, "total": 1024} in [
        {k: e[k] for k in ("step", "done", "total")} for e in progress]
    assert [e["step"] for e in progress if e["step"].startswith("repetition")] == ["repetition 1/2", "repetition 2/2"]
    assert all(info["label"] == configs[0].label for info in steps)


def test_wait_relays_progress_and_ends_a_worker_past_its_timeout(tmp_path):
    import subprocess
    import sys

    events_path = tmp_path / "events.jsonl"
    events_path.write_text(json.dumps({"event": "progress", "step": "repetition 1/3", "done": None, "total": None})
                           + "\n" + '{"event": "prog')  # a torn last line is left for the next poll
    got = []
    runner = Runner(create_run_dir(tmp_path), DEVICE, RunOptions(timeout_s=30),
                    notify=lambda name, **info: got.append((name, info)))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.2)"], start_new_session=True)
    assert runner._wait(child, events_path, "cfg")
    assert got == [("config_progress", {"label": "cfg", "step": "repetition 1/3", "done": None, "total": None,
                                        "unit": "tokens"})]
    short = Runner(create_run_dir(tmp_path / "b"), DEVICE, RunOptions(timeout_s=0.6))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    assert not short._wait(child, events_path, "cfg") and child.returncode == -signal.SIGKILL


def test_fidelity_is_a_job_of_its_own_and_its_failure_keeps_the_measurement(tmp_path):
    """The measuring worker no longer loads the unquantized parent; fidelity runs after it, and a fidelity
    job that fails (here: a parent that cannot be loaded, as an f16 3B parent on an 8 GB board) leaves the
    repetitions `ok` with `fidelity_status` saying what happened."""
    from edgeprof.export.artifacts import Artifact

    run_dir = create_run_dir(tmp_path)
    runner = Runner(run_dir, DEVICE, RunOptions(repetitions=2, warmup=0, fidelity=True))
    (config,) = expand(["synth:tiny"], ["q4_0"], ["llama.cpp"], SMALL)
    records = runner.run_one(config)
    assert [r.status for r in records] == ["ok", "ok"]
    assert records[0].metrics["fidelity_status"] == "ok" and 0 <= records[0].metrics["fidelity_top1_agreement"] <= 1
    assert records[0].metrics["fidelity_ppl"] > 1 and records[0].metrics["fidelity_positions"] > 0
    jobs = {path.name for path in (run_dir.path / "jobs").glob("*.json")}
    assert any(name.endswith(".fidelity.json") for name in jobs)
    measuring = [json.loads((run_dir.path / "jobs" / n).read_text()) for n in jobs if not n.endswith(".fidelity.json")]
    assert all("fidelity" not in job for job in measuring)

    artifact, _ = runner._export(config, "q4_0")
    missing = Artifact(**{**artifact.__dict__, "path": str(tmp_path / "gone.gguf"), "sha256": "0" * 64})
    outcome = runner._fidelity("k", config, artifact, missing)
    assert outcome["fidelity_status"] == "failed" and outcome["fidelity_error"]


def test_each_backend_expands_only_the_options_it_reads():
    """--backend llama.cpp,onnxruntime --kv-type f16,q8_0 --graph-opt basic,all used to make 8 configurations,
    4 of them duplicates, and an ORT record said kv_type f16."""
    configs = expand(["synth:tiny"], ["f32"], ["llama.cpp", "onnxruntime"],
                     {**SMALL, "kv_type": ["f16", "q8_0"], "graph_opt": ["basic", "all"]})
    by_backend = {}
    for config in configs:
        by_backend.setdefault(config.backend, []).append(config.hp)
    assert sorted(hp.kv_type for hp in by_backend["llama.cpp"]) == ["f16", "q8_0"]
    assert all(hp.graph_opt is None and hp.provider is None for hp in by_backend["llama.cpp"])
    assert sorted(hp.graph_opt for hp in by_backend["onnxruntime"]) == ["all", "basic"]
    assert all(hp.kv_type is None and hp.gpu_layers is None for hp in by_backend["onnxruntime"])
    assert len(configs) == 4
    # a config id hashes only what its backend uses: the ORT workload has no KV-cache type in it
    ort = next(hp for hp in by_backend["onnxruntime"])
    assert "kv_type" not in ort.workload() and by_backend["llama.cpp"][0].workload()["kv_type"] in ("f16", "q8_0")


def test_llama_cpp_config_ids_are_unchanged_by_per_backend_options():
    """Runs already recorded join new ones by config id: llama.cpp's workload is what it was."""
    from edgeprof.config import Hyperparameters, config_id

    (config,) = expand(["synth:tiny"], ["q4_0"], ["llama.cpp"], SMALL)
    full = Hyperparameters(batch=1, prompt_tokens=16, gen_tokens=8, threads=2)
    assert config_id("synth:tiny", "q4_0", "llama.cpp", config.hp) == config_id("synth:tiny", "q4_0", "llama.cpp", full)
    # and the id itself, as edgeprof computed it before backends were plug-ins (66cacf1)
    assert config_id("synth:tiny", "q4_0", "llama.cpp", config.hp) == "7bd4acdf8e25"


def test_kv_buffer_lives_where_the_provider_reads_it():
    from edgeprof.backends.onnxruntime.session import kv_device
    from edgeprof.hardware.emulation import storage_equivalent

    assert kv_device("CUDAExecutionProvider") == kv_device("TensorrtExecutionProvider") == "cuda"
    assert kv_device("CoreMLExecutionProvider") == kv_device("DmlExecutionProvider") == "cpu"
    assert [storage_equivalent(q) for q in ("int4", "int4-b128", "int8", "fp16", "fp32", "q4_k_m")] == \
        ["q4_0", "q4_0", "q8_0", "f16", "f32", "q4_k_m"]  # ONNX int4 was sized as a GGUF f16
