"""The run session (issue 22, part B): one owner of a run directory's manifest, resume, records and end,
whatever launcher runs its configurations; the typed worker contracts; manifests of the old layout."""

from __future__ import annotations

import json

import pytest

from edgeprof.bench.contracts import (JOB_SCHEMA_VERSION, Extras, Failed, Loaded, Progress, Repetition, WorkerJob,
                                      parse_event, read_events)
from edgeprof.bench.execute import execute
from edgeprof.bench.plan import expand
from edgeprof.bench.runner import make_record, record_ids
from edgeprof.bench.session import ConfigOutcome, Ending, Lost, RunSession, drive
from edgeprof.bench.sweep import SweepSpec
from edgeprof.errors import ConfigError
from edgeprof.results.records import read_records
from edgeprof.results.rundir import MANIFEST_SCHEMA_VERSION, Manifest, create_run_dir, load_manifest, read_manifest

SPEC = SweepSpec(models=["synth:tiny"], quants=["q4_0", "q8_0", "q4_k_m"], grid={"prompt_tokens": [16], "gen_tokens": [8]},
                 repetitions=2, warmup=0, sample_hz=0, idle_s=0, fidelity=False, energy_window_s=0)
DEVICE = {"profile": "test", "emulated": False}


class ScriptedLauncher:
    """A launcher whose configurations end as scripted: "ok" (records confirmed), "lost", or "die" (the
    launcher itself raises, as an engine whose connection closed would, before settling the rest)."""

    def __init__(self, script: list[str]):
        self.script = script
        self.assigned = []

    def run_key_of(self, session, config):
        return record_ids(config, None)[1]

    def artifact_of(self, session, config):
        return None

    def launch(self, assignments):
        self.assigned = list(assignments)

    def settle(self):
        for assignment, what in zip(self.assigned, self.script):
            if what == "die":
                raise RuntimeError("ConnectionPool is closed")
            if what == "lost":
                yield assignment, Lost("device d left")
                continue
            records = [make_record("", DEVICE, assignment.config, None, index, "ok", metrics={"decode_tps": 1.0})
                       for index in range(SPEC.repetitions)]
            yield assignment, ConfigOutcome(records)


def _session(tmp_path, on_event=lambda *a, **k: None) -> tuple[RunSession, list]:
    configs = expand(SPEC.models, SPEC.quants, SPEC.backends, SPEC.grid)
    run_dir = create_run_dir(tmp_path)
    return RunSession.create(run_dir, Manifest(run_dir.run_id, DEVICE), SPEC, len(configs), on_event), configs


def test_whatever_the_launcher_does_an_unconfirmed_configuration_is_lost_and_resume_runs_exactly_it(tmp_path):
    session, configs = _session(tmp_path)
    with pytest.raises(RuntimeError):
        drive([(session, configs)], ScriptedLauncher(["ok", "lost", "die"]))
    result = session.finish(Ending(why="the fleet's head stopped answering"))
    records = read_records(session.run_dir.records_path)
    assert [r["status"] for r in records] == ["ok", "ok", "lost", "lost"]  # the third was never confirmed
    assert result.exit_code == 1 and result.lost == 2 and result.status.startswith("incomplete: the fleet's head")
    manifest = load_manifest(session.run_dir.path)
    assert manifest.status == result.status and manifest.ended == "the fleet's head stopped answering"

    events = []
    resumed = RunSession.resume(session.run_dir.path, SPEC, len(configs), lambda name, **info: events.append(name))
    launcher = ScriptedLauncher(["ok", "ok"])
    drive([(resumed, configs)], launcher)
    assert [a.config.label for a in launcher.assigned] == [c.label for c in configs[1:]]
    assert events.count("config_already_done") == 1
    result = resumed.finish()
    assert result.exit_code == 0 and result.status == "complete" and not result.failed
    records = read_records(session.run_dir.records_path)
    assert [r["status"] for r in records] == ["ok"] * 6 and len({r["run_key"] for r in records}) == 3
    manifest = load_manifest(session.run_dir.path)
    assert [(r.finished_before, r.records_dropped) for r in manifest.resumed] == [(1, 2)]  # the two lost records


def test_a_stopped_run_writes_nothing_for_what_it_discarded(tmp_path):
    """Ctrl-C discards the configuration in flight (no record: it reruns on resume), as before."""
    session, configs = _session(tmp_path)
    for config in configs:
        session.handed_out(record_ids(config, None)[1], config)
    result = session.finish(Ending(130))
    assert read_records(session.run_dir.records_path) == []
    assert result.interrupted and result.exit_code == 130 and load_manifest(session.run_dir.path).status == "interrupted"


def test_a_run_directory_of_the_old_layout_reads_and_resumes(tmp_path):
    """A manifest written before the session (no schema version, a local run's `partial_records_dropped`)
    resumes, and is rewritten in the new layout with its entries kept."""
    spec = SweepSpec(**{**SPEC.to_dict(), "quants": ["q4_0", "q8_0"]})
    first = execute(spec, tmp_path)
    path = first.run_dir
    old = json.loads((path / "manifest.json").read_text())
    for key in ("schema_version", "ended"):
        old.pop(key, None)
    old["resumed"] = [{"command": ["edgeprof", "sweep"], "finished_before": 1, "partial_records_dropped": 1}]
    old["written_by_a_newer_edgeprof"] = {"kept": True}
    (path / "manifest.json").write_text(json.dumps(old))
    lines = (path / "records.jsonl").read_text().splitlines()
    (path / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # the last configuration lost a repetition

    assert load_manifest(path).schema_version == 1 and load_manifest(path).resumed[0].records_dropped == 1
    assert read_manifest(path)["device"] == old["device"]
    resumed = execute(spec, tmp_path, resume_dir=path)
    assert resumed.exit_code == 0 and [r["status"] for r in read_records(path / "records.jsonl")] == ["ok"] * 4
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["schema_version"] == MANIFEST_SCHEMA_VERSION and manifest["status"] == "complete"
    assert [r["records_dropped"] for r in manifest["resumed"]] == [1, 1]
    assert "partial_records_dropped" not in json.dumps(manifest["resumed"])
    assert manifest["written_by_a_newer_edgeprof"] == {"kept": True} and manifest["started_at"] == old["started_at"]


def test_worker_job_and_events_are_one_typed_contract(tmp_path):
    job = WorkerJob("llama.cpp", "/m.gguf", {"batch": 1}, repetitions=2, energy_pass={"window_s": 2.0})
    job.write(tmp_path / "job.json")
    assert WorkerJob.read(tmp_path / "job.json") == job
    assert "fidelity" not in json.loads((tmp_path / "job.json").read_text())  # unused settings are left out
    (tmp_path / "old.json").write_text(json.dumps({"backend": "llama.cpp", "model_path": "/m", "hyperparameters": {}}))
    with pytest.raises(ConfigError, match=f"this edgeprof reads {JOB_SCHEMA_VERSION}"):
        WorkerJob.read(tmp_path / "old.json")

    lines = [Loaded(12.5, {"worker_cpus": 2}, ["load", 1.0, 2.0]), Progress("repetition 1/2"),
             Repetition(0, {"decode_tps": 3.0}, {"decode": [2.0, 3.0]}, 99.0), Extras({"gpu_mem_mb": 5}),
             Failed("boom", status="oom")]
    path = tmp_path / "events.jsonl"
    with open(path, "w") as stream:
        for event in lines:
            event.emit(stream)
        stream.write(json.dumps({"event": "from_a_newer_worker"}) + "\n" + '{"event": "repet')  # unknown, torn
    assert read_events(path) == lines
    assert json.loads(path.read_text().splitlines()[2])["event"] == "repetition"  # the lines older runs hold
    assert parse_event({"event": "repetition", "index": 0}) is None  # fields missing: not this version's line
