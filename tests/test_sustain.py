"""Sustained runs: windows, steady state, drop, time to throttle and the limit that fired, on a fake board
whose temperature rises with load and a fake backend that slows as it heats; then end to end on the tiny
model. Time is the fake's own clock: nothing here waits on durations."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from edgeprof.bench.sustain import (SteadyDetector, SustainPlan, parse_duration_s, run_sustain, steady_from,
                                    summarize, window_figures, window_row, write_rows)
from edgeprof.errors import ConfigError
from edgeprof.sensors.base import Metric
from edgeprof.sensors.energy import plan_energy
from edgeprof.sensors.throttle import limit_of

HW_THERMAL = 0x40  # NVML's clock-event reason for a thermal slowdown
THROTTLE_AT_C = 70.0


class FakeBoard:
    """Temperature rises toward 80 C under load, T(t) = 40 + 40 (1 - exp(-t / 120)); decode runs at
    100 - (T - 40) tokens/s, so it falls from 100 to 60 as the board heats; prefill runs 10x as fast.
    The thermal flag is raised from 70 C (t = 120 ln 4 = 166.4 s)."""

    def __init__(self, clock_drops: bool = False, flags: bool = True):
        self.t = 0.0
        self.clock_drops = clock_drops
        self.flags = flags

    def temp(self, t: float) -> float:
        return 40.0 + 40.0 * (1 - math.exp(-t / 120.0))

    def speed(self) -> float:
        return 100.0 - (self.temp(self.t) - 40.0)

    def repetition(self, prompt: int = 32, gen: int = 64) -> dict:
        prefill_s = prompt / (10 * self.speed())
        self.t += prefill_s
        decode_s = gen / self.speed()
        self.t += decode_s
        return {"repetitions": 1, "prompt_tokens": prompt, "decoded_tokens": gen, "prefill_s": prefill_s,
                "decode_s": decode_s}

    def samples(self, until: float, every: float = 0.5):
        """What a sampler in the parent would have read, every `every` seconds of the fake clock."""
        times, rows = [], []
        for i in range(int(until / every) + 2):
            t = i * every
            hot = self.temp(t)
            row = {"board.power_w": 5.0 + 0.1 * hot + 1e-6 * (i % 2), "board.temp_c": hot, "gpu.clock_mhz": 1980.0}
            if self.flags:
                row["gpu.throttle"] = float(HW_THERMAL if hot >= THROTTLE_AT_C else 0)
            if self.clock_drops and hot >= THROTTLE_AT_C:
                row["gpu.clock_mhz"] = 1500.0
            times.append(t)
            rows.append(row)
        return times, rows


METRICS = [Metric("board.power_w", "W", "power_w", "board", "board", period_s=0.5, period_note="test"),
           Metric("board.temp_c", "C", "temp_c"), Metric("gpu.throttle", "mask", "throttle"),
           Metric("gpu.clock_mhz", "MHz", "clock_mhz")]


def _sustain(board: FakeBoard, duration_s: float = 600.0, should_stop=None) -> list[dict]:
    events: list[dict] = []
    run_sustain(board.repetition, SustainPlan(duration_s, window_s=10.0), events.append, clock=lambda: board.t,
                should_stop=should_stop)
    return events


def _rows(board: FakeBoard, events: list[dict]) -> list[dict]:
    times, samples = board.samples(events[-1]["t1"])
    plan = plan_energy(METRICS, 0.5)
    return [window_row(e, events[0]["t0"], window_figures(METRICS, plan, times, samples, e["t0"], e["t1"]))
            for e in events]


def test_windows_abut_cover_the_run_and_count_every_token():
    board = FakeBoard()
    events = _sustain(board)
    assert all(b["t0"] == a["t1"] for a, b in zip(events, events[1:]))  # the load never pauses between windows
    assert all(e["t1"] - e["t0"] >= 10.0 for e in events[:-1])  # every window but the cut-off last is full
    assert events[-1]["last"] and events[-1]["t1"] >= 600.0 and not events[-1]["stopped_early"]
    assert sum(e["repetitions"] for e in events) * 64 == sum(e["decoded_tokens"] for e in events)
    # a window closes at the first repetition end past 10 s: at most one repetition longer, and the slowest
    # repetition here is 64 / 60 + 32 / 600 = 1.12 s
    assert all(e["t1"] - e["t0"] <= 10.0 + 64 / 60 + 32 / 600 for e in events)


def test_steady_state_drop_time_to_throttle_and_thermal_limit():
    board = FakeBoard()
    rows = _rows(board, _sustain(board))
    assert rows[0]["decode_tps"] > rows[-1]["decode_tps"]
    assert rows[-1]["temp_c_max"] > rows[0]["temp_c_max"]
    summary = summarize(rows, limit_of)
    # Steady from t on needs the hottest reading to stay within 1 C until the end (600 s):
    # 40 (e^(-t/120) - e^(-5)) <= 1 from t = 414 s, so the first steady window opens within 10 s before that
    # (its hottest reading is at its end); the rate (100 - (T - 40)) then varies by 1 token/s at most.
    assert summary["sustain_steady"] and 403.0 <= summary["sustain_steady_from_s"] <= 414.1
    # 100 - 40 (1 - mean of e^(-t/120) over 410..600 s = 0.0165) = 60.7 tokens/s
    assert summary["sustain_steady_decode_tps"] == pytest.approx(60.7, abs=0.5)
    # First minute: mean of 100 - 40 (1 - e^(-t/120)) over 60 s is 91.5 tokens/s; drop 1 - 60.7 / 91.5 = 33.7 %.
    assert summary["sustain_first_minute_decode_tps"] == pytest.approx(91.5, abs=1.0)
    assert summary["sustain_drop_pct"] == pytest.approx(33.7, abs=1.0)
    # The flag goes up at 166.4 s: the window that holds that moment opened at most one window earlier.
    assert 155.0 <= summary["sustain_time_to_throttle_s"] <= 166.4
    assert summary["sustain_limit"] == "thermal" and summary["sustain_limits"] == ["thermal"]
    assert summary["sustain_steady_power_w"] == pytest.approx(5.0 + 0.1 * 79.3, abs=0.2)  # T = 80 - 40 x 0.0165


def test_a_clock_that_falls_without_a_flag_is_a_clock_limit():
    board = FakeBoard(clock_drops=True, flags=False)
    summary = summarize(_rows(board, _sustain(board)), limit_of)
    assert summary["sustain_limit"] == "clock" and 155.0 <= summary["sustain_time_to_throttle_s"] <= 166.4


def test_no_throttle_and_a_flat_run_is_steady_from_the_start():
    rows = [{"window": i, "t_start_s": 10.0 * i, "t_end_s": 10.0 * (i + 1), "decode_tps": 50.0 + 0.1 * (i % 2),
             "prefill_tps": 500.0, "decoded_tokens": 500, "temp_c_max": 50.0, "throttle_reasons": []}
            for i in range(10)]
    summary = summarize(rows, limit_of)
    assert summary["sustain_steady_from_s"] == 0.0 and summary["sustain_throttled"] is False
    assert summary["sustain_drop_basis"] == "steady"
    assert summary["sustain_limit"] is None and abs(summary["sustain_drop_pct"]) < 0.2


def test_a_run_that_never_settles_has_no_steady_figures():
    rates = [30, 30, 30, 30, 30, 30, 45, 45, 45, 30, 30, 45]  # a shared host: neighbours come and go
    rows = [{"window": i, "t_start_s": 10.0 * i, "t_end_s": 10.0 * (i + 1), "decode_tps": float(r),
             "prefill_tps": 300.0, "decoded_tokens": 300} for i, r in enumerate(rates)]
    summary = summarize(rows, limit_of)
    assert summary["sustain_steady"] is False
    assert "sustain_steady_decode_tps" not in summary and "sustain_steady_from_s" not in summary
    # last three windows: 900 tokens in 10 + 10 + 6.67 s = 33.75 tokens/s; first minute 30: 12.5 % faster
    assert summary["sustain_end_decode_tps"] == pytest.approx(33.75)
    assert summary["sustain_drop_basis"] == "end" and summary["sustain_drop_pct"] == pytest.approx(-12.5)


def test_until_steady_stops_once_settled_never_while_heating():
    board = FakeBoard()
    detector = SteadyDetector()
    seen: list[dict] = []

    def should_stop() -> bool:  # what the parent does: a row per new window, then the detector's verdict
        return any(detector.add(row) for row in _new_rows())

    def _new_rows():
        fresh = events[len(seen):]
        seen.extend(fresh)
        return _rows(board, seen)[-len(fresh):] if fresh else []

    events: list[dict] = []
    run_sustain(board.repetition, SustainPlan(600.0, window_s=10.0), events.append, clock=lambda: board.t,
                should_stop=should_stop)
    assert events[-1]["stopped_early"] and events[-1]["t1"] < 600.0
    # 6 windows within 1 C: their hottest readings lie at their ends, 50 s apart from the first to the last;
    # 40 e^(-t/120) (1 - e^(-50/120)) <= 1 from t = 313.5 s, so the run cannot stop before 363.5 s
    assert events[-1]["t1"] >= 363.5
    assert steady_from(_rows(board, events)[-6:], min_windows=6) == 0


def test_series_is_pandas_readable(tmp_path):
    board = FakeBoard()
    rows = _rows(board, _sustain(board, duration_s=200.0))
    write_rows(tmp_path / "s.csv", rows)
    frame = pd.read_csv(tmp_path / "s.csv")
    assert list(frame["window"]) == list(range(len(rows)))
    assert {"t_start_s", "decode_tps", "power_w", "temp_c_max", "clock.gpu.clock_mhz"} <= set(frame.columns)
    assert frame["throttle_reasons"].fillna("").str.contains("hw_thermal").any()


def test_durations():
    assert parse_duration_s("10m") == 600 and parse_duration_s("90s") == 90 and parse_duration_s("1h") == 3600
    assert parse_duration_s("0") == 0 and parse_duration_s("1.5m") == 90
    with pytest.raises(ConfigError, match="duration"):
        parse_duration_s("ten minutes")


def test_sustained_run_end_to_end_on_the_tiny_model(tmp_path):
    from edgeprof.bench.plan import expand
    from edgeprof.bench.runner import Runner, RunOptions
    from edgeprof.results.records import read_records
    from edgeprof.results.rundir import create_run_dir
    from edgeprof.sensors.base import Availability, SensorState
    from edgeprof.sensors.session import SensorSession
    from fake_sensors import ConstantPowerSensor

    run_dir = create_run_dir(tmp_path)
    sensor = ConstantPowerSensor(watts=10.0, period_s=0.02)
    session = SensorSession([sensor], [SensorState("constant", Availability(True), sensor.metrics())], hz=50,
                            idle_s=0, samples_path=run_dir.path / "samples.csv")
    session.start()
    configs = expand(["synth:tiny"], ["f32"], ["llama.cpp"],
                     {"batch": [1], "prompt_tokens": [16], "gen_tokens": [8], "threads": [2]})
    try:
        Runner(run_dir, {"profile": "test"}, RunOptions(repetitions=1, warmup=0, fidelity=False, energy_window_s=0,
                                                        sustain_s=1.0, sustain_window_s=0.25),
               sensors=session).run(configs)
    finally:
        session.close()
    (record,) = read_records(run_dir.records_path)
    assert record["status"] == "ok", record["error"]
    metrics = record["metrics"]
    frame = pd.read_csv(run_dir.path / metrics["sustain_series"])
    assert len(frame) == metrics["sustain_windows"] >= 1
    assert (frame["decode_tps"] > 0).all() and frame["power_w"].notna().any()
    assert metrics["sustain_stop"] == "time" and metrics["sustain_first_minute_decode_tps"] > 0
    assert "sustain_drop_pct" in metrics and metrics["sustain_throttled"] is False  # no flag, no clock here
    from edgeprof.results.summary import summarize as summary_rows

    (row,) = summary_rows(read_records(run_dir.path / "records.jsonl"))
    assert row["sustain_windows"] == metrics["sustain_windows"] and row["kv_cache_bytes"] > 0
    phases = pd.read_csv(run_dir.path / "samples.csv")["phase"]
    assert (phases == "sustain").any()  # the parent's samples carry the sustained windows' label


def _fake_run(path, device: str, rows: list[dict], summary: dict) -> None:
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"device": {"profile": device}}))
    write_rows(path / "sustain" / "k1.csv", rows)
    record = {"run_key": "k1", "status": "ok", "backend": "llama.cpp", "model": {"name": "synth:tiny", "quant": "f32"},
              "hyperparameters": {"batch": 1, "depth": 0}, "metrics": {**summary, "sustain_series": "sustain/k1.csv"}}
    (path / "records.jsonl").write_text(json.dumps(record) + "\n")


def test_figure_puts_runs_side_by_side_with_their_windows(tmp_path):
    from edgeprof.analysis.sustain_plot import sustained_figure

    board = FakeBoard()
    rows = _rows(board, _sustain(board))
    _fake_run(tmp_path / "edge", "jetson-orin-nano-8gb", rows, summarize(rows, limit_of))
    flat = [{**r, "temp_c_max": math.nan} for r in rows]
    _fake_run(tmp_path / "server", "h200", flat, summarize(flat, limit_of))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "records.jsonl").write_text("")
    assert sustained_figure([tmp_path / "plain"]) is None  # no sustained configuration: no figure
    fig = sustained_figure([tmp_path / "edge", tmp_path / "server", tmp_path / "plain"])
    axes = fig.axes
    assert len(axes) == 4  # two runs with sustained data, throughput above temperature
    assert [axes[0].get_title(), axes[1].get_title()] == ["jetson-orin-nano-8gb", "h200"]
    drawn = axes[0].lines[0].get_ydata()
    assert list(drawn) == pytest.approx([r["decode_tps"] for r in rows])
    assert any("no temperature sensor" in text.get_text() for text in axes[3].texts)


def test_sweep_file_keys(tmp_path):
    from edgeprof.bench.sweep import load_sweep_file

    path = tmp_path / "endurance.yaml"
    path.write_text("models: [synth:tiny]\nsustain: 5m\nsustain_until_steady: true\n"
                    "hyperparameters:\n  depth: [0, 512, 4096]\n  power_mode: [MAXN, 25W, 15W]\n")
    spec = load_sweep_file(path)
    assert spec.sustain_s == 300 and spec.sustain_until_steady
    assert spec.grid == {"depth": [0, 512, 4096], "power_mode": ["MAXN", "25W", "15W"]}
    path.write_text("models: [synth:tiny]\nsustain: forever\n")
    with pytest.raises(ConfigError, match="endurance.yaml: --sustain takes a duration"):
        load_sweep_file(path)
