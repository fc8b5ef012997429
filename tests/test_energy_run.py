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


def test_constant_power_gives_power_times_phase_duration(tmp_path):
    run_dir = create_run_dir(tmp_path)
    sensor = ConstantPowerSensor(watts=10.0)
    session = SensorSession([sensor], [SensorState("constant", Availability(True), sensor.metrics())], hz=200,
                            idle_s=0.3, samples_path=run_dir.path / "samples.csv")
    session.start()
    configs = expand(["synth:tiny"], ["q4_0"], ["llama.cpp"],
                     {"batch": [1], "prompt_tokens": [64], "gen_tokens": [256], "threads": [2]})
    try:
        Runner(run_dir, {"profile": "test"}, RunOptions(repetitions=2, warmup=1), sensors=session).run(configs)
    finally:
        session.close()
    records = read_records(run_dir.records_path)
    assert [r["status"] for r in records] == ["ok", "ok"]
    for record in records:
        m = record["metrics"]
        assert m["energy_decode_j"] == pytest.approx(10.0 * m["decode_ms"] / 1e3, rel=1e-6)
        assert m["energy_prefill_j"] == pytest.approx(10.0 * m["prefill_ms"] / 1e3, rel=1e-6)
        assert m["j_per_token_decode"] == pytest.approx(m["energy_decode_j"] / 256)
        assert m["idle_power_w"] == pytest.approx(10.0)
        assert m["energy_per_request_j"] == pytest.approx(m["energy_prefill_j"] + m["energy_decode_j"])
        assert m["energy_decode_above_idle_j"] == pytest.approx(0.0, abs=1e-9)
        assert m["temp_c_start"] <= m["temp_c_max"] and m["temp_sensor"] == "constant.temp_c"
        assert record["sensors"]["energy"].startswith("board input")
    with open(run_dir.path / "samples.csv") as f:
        rows = list(csv.DictReader(f))
    phases = {row["phase"] for row in rows}
    assert {"idle", "decode"} <= phases <= {"idle", "load", "warmup", "prefill", "decode", "between"}
    assert all(float(row["constant.power_w"]) == 10.0 for row in rows)
    assert [float(r["t_s"]) for r in rows] == sorted(float(r["t_s"]) for r in rows)


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
