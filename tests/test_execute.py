"""A run is one library call: `execute(spec, out, on_event=...)` prints nothing and returns what it left."""

from edgeprof.bench.execute import execute
from edgeprof.bench.sweep import SweepSpec


def test_a_run_is_one_library_call(tmp_path, capsys):
    events = []
    spec = SweepSpec(models=["synth:tiny"], quants=["q4_0", "q8_0"],
                     grid={"prompt_tokens": [16], "gen_tokens": [8], "threads": [2]},
                     repetitions=2, warmup=0, sample_hz=0, idle_s=0, fidelity=False)
    result = execute(spec, tmp_path, on_event=lambda name, **info: events.append((name, info)))
    assert result.exit_code == 0 and not result.interrupted and not result.failed
    assert sorted(row["quant"] for row in result.rows) == ["q4_0", "q8_0"]
    assert all(row["repetitions"] == 2 for row in result.rows)
    assert (result.run_dir / "manifest.json").exists() and (result.run_dir / "summary.csv").exists()
    names = [name for name, _ in events]
    assert names.index("run_started") < names.index("config_started") and names.count("config_finished") == 2
    assert dict(events[names.index("run_started")][1])["configurations"] == 2
    assert capsys.readouterr().out == ""  # rendering is the caller's business
    from edgeprof.results.records import read_records

    # a CPU run samples greedy on the host (device sampling is for offloaded models, backends/llamacpp/session.py)
    assert {r["metrics"]["sampling"] for r in read_records(result.run_dir / "records.jsonl")} == {"host"}
