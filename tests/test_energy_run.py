"""Sensors sampled in the parent line up with phases timed in the worker process."""

import csv

import pytest

from edgeprof.bench.plan import expand
from edgeprof.bench.runner import Runner, RunOptions
from edgeprof.results.records import read_records
from edgeprof.results.rundir import create_run_dir
from edgeprof.sensors.base import Availability, SensorState
from edgeprof.sensors.session import SensorSession
from fake_sensors import ConstantPowerSensor


def _run_with(tmp_path, sensor, options, hz=200, idle_s=0.3, gen=256):
    run_dir = create_run_dir(tmp_path)
    session = SensorSession([sensor], [SensorState("constant", Availability(True), sensor.metrics())], hz=hz,
                            idle_s=idle_s, samples_path=run_dir.path / "samples.csv")
    session.start()
    configs = expand(["synth:tiny"], ["q4_0"], ["llama.cpp"],
                     {"batch": [1], "prompt_tokens": [64], "gen_tokens": [gen], "threads": [2]})
    try:
        Runner(run_dir, {"profile": "test"}, options, sensors=session).run(configs)
    finally:
        session.close()
    return run_dir, read_records(run_dir.records_path)


def test_energy_comes_from_steady_windows_one_per_repetition(tmp_path):
    # a sensor with a 0.3 s period: each window must be >= 3 periods, so the 0.1 s asked for becomes 0.9 s,
    # far longer than 4 decode steps of the tiny model, so the worker holds each phase in a steady pass
    run_dir, records = _run_with(tmp_path, ConstantPowerSensor(watts=10.0, period_s=0.3),
                                 RunOptions(repetitions=2, warmup=1, energy_window_s=0.1), gen=4)
    assert [r["status"] for r in records] == ["ok", "ok"]
    windows = []
    held = set()  # the phases a steady pass held (the samples are labelled energy-<phase> then)
    for record in records:
        m = record["metrics"]
        for phase in ("prefill", "decode"):
            assert m[f"energy_{phase}_window_s"] >= 0.9
            assert m[f"power_{phase}_w_mean"] == pytest.approx(10.0, rel=1e-6)
            tokens = m[f"energy_{phase}_window_tokens"]
            assert m[f"j_per_token_{phase}"] == pytest.approx(10.0 * m[f"energy_{phase}_window_s"] / tokens, rel=1e-6)
        # the repetition's own energy: its tokens at the steady J/token
        assert m["energy_decode_j"] == pytest.approx(m["j_per_token_decode"] * 4)
        assert m["energy_per_request_j"] == pytest.approx(m["energy_prefill_j"] + m["energy_decode_j"])
        assert m["idle_power_w"] == pytest.approx(10.0, rel=1e-6)
        assert m["energy_decode_above_idle_j"] == pytest.approx(0.0, abs=1e-6)
        assert m["temp_c_start"] <= m["temp_c_max"] and m["temp_sensor"] == "constant.temp_c"
        assert record["sensors"]["energy"].startswith("board input")
        # Milliseconds of work on a fast host, so a steady pass holds each phase. On a starved host a timed
        # phase of 4 tiny steps has taken over 0.9 s: then its own windows are long enough and are used, and
        # the record must say so. Either way the window is one the sensor resolves (checked above).
        methods = record["sensors"]["energy_window"]
        assert ("rewound to position 64 every 4 steps" in methods["decode"]
                or methods["decode"] == "the timed decodes (each already long enough)")
        assert methods["prefill"].startswith("steady pass") or methods["prefill"] == (
            "the timed prefills (each already long enough)")
        held |= {phase for phase in ("prefill", "decode") if "steady pass" in methods[phase]}
        windows.append(m["energy_decode_window_s"])
    with open(run_dir.path / "samples.csv") as f:
        rows = list(csv.DictReader(f))
    phases = {row["phase"] for row in rows}
    assert {"idle"} | {f"energy-{phase}" for phase in held} <= phases
    assert phases <= {"idle", "load", "warmup", "prefill", "decode", "energy-prefill", "energy-decode", "between"}
    assert all(float(row["constant.power_w"]) == pytest.approx(10.0) for row in rows)
    assert [float(r["t_s"]) for r in rows] == sorted(float(r["t_s"]) for r in rows)


def test_without_an_energy_pass_short_timed_phases_are_unresolved(tmp_path):
    # a 5 s sensor and no pass: the tiny model's 16 timed steps take milliseconds (seconds on a starved host),
    # far under the 15 s such a sensor resolves
    _, records = _run_with(tmp_path, ConstantPowerSensor(watts=10.0, period_s=5.0),
                           RunOptions(repetitions=1, warmup=0, energy_window_s=0), hz=20, idle_s=0, gen=16)
    (record,) = records
    m = record["metrics"]
    assert "j_per_token_decode" not in m and "energy_decode_j" not in m
    assert "shorter than 3 periods (5 s)" in m["energy_decode_unresolved"]


def test_without_power_sensors_energy_is_unavailable_not_invented(tmp_path):
    from edgeprof.sensors.process import ProcessSensor

    run_dir = create_run_dir(tmp_path)
    process = ProcessSensor()
    session = SensorSession([process], [SensorState("process", process.probe(), process.metrics())], hz=20,
                            idle_s=0, samples_path=run_dir.path / "samples.csv")
    session.start()
    configs = expand(["synth:tiny"], ["q4_0"], ["llama.cpp"],
                     {"batch": [1], "prompt_tokens": [16], "gen_tokens": [16], "threads": [2]})
    try:
        Runner(run_dir, {"profile": "test"}, RunOptions(repetitions=1, warmup=0), sensors=session).run(configs)
    finally:
        session.close()
    (record,) = read_records(run_dir.records_path)
    assert record["status"] == "ok"
    assert "energy_decode_j" not in record["metrics"] and "j_per_token_decode" not in record["metrics"]
    assert record["sensors"]["energy"].startswith("unavailable")
    assert record["metrics"]["process_worker_rss_mb_peak"] > 0  # the worker's memory was sampled


def test_sample_history_stays_bounded_and_every_sample_reaches_samples_csv(tmp_path):
    sensor = ConstantPowerSensor(watts=5.0)
    path = tmp_path / "samples.csv"
    session = SensorSession([sensor], [SensorState("constant", Availability(True), sensor.metrics())], hz=200,
                            idle_s=0, samples_path=path)
    session.start()
    import time

    held = []
    for index in range(5):  # five "configurations"
        time.sleep(0.15)
        session.flush_samples(f"config-{index}")
        held.append(len(session.sampler.times))
    session.close()
    assert max(held) <= 2  # only what a following window may need is kept in memory
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == session.sampler.samples_taken >= 5 * 0.15 * 200 * 0.5
    assert [float(r["t_s"]) for r in rows] == sorted(float(r["t_s"]) for r in rows)


def test_a_sample_taken_while_samples_are_flushed_still_reaches_samples_csv(tmp_path):
    """The sampler thread appends whenever it likes; here it appends right after every snapshot the flush
    takes (the worst moment), deterministically, with no thread: each sample must still be written once."""
    sensor = ConstantPowerSensor(watts=5.0)
    path = tmp_path / "samples.csv"
    session = SensorSession([sensor], [SensorState("constant", Availability(True), sensor.metrics())], hz=200,
                            idle_s=0, samples_path=path)
    sampler = session.sampler
    plain_snapshot = sampler.snapshot

    def snapshot_then_sample(start_index: int = 0):
        taken = plain_snapshot(start_index)
        sampler._read_all()  # what the thread may do between two lines of the flush
        return taken

    for _ in range(3):
        sampler._read_all()
    sampler.snapshot = snapshot_then_sample
    for index in range(4):
        session.flush_samples(f"config-{index}")
    sampler.snapshot = plain_snapshot
    session.close()
    with open(path) as f:
        rows = list(csv.reader(f))  # never started, so no header line: every line is a sample
    assert len(rows) == sampler.samples_taken
    assert len({tuple(r) for r in rows}) == len(rows)  # none written twice (the energy counter column differs)
