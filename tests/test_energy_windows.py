"""Energy only over windows the sensor resolves: sensor periods, unresolved short windows, and the steady
energy pass that gives every repetition a window long enough."""

import numpy as np
import pytest

from edgeprof.bench.energy_pass import EnergyPassPlan, hold, plan_energy_pass
from edgeprof.sensors.base import Metric, measure_change_interval_s
from edgeprof.sensors.energy import RESOLVE_PERIODS, EnergyCalculator, plan_energy, window_metrics

IDLE_W, LOAD_W, STEP_AT = 100.0, 400.0, 10.0


def _averaging_sensor(period_s=1.0, hz=10, until=20.0):
    """Readings of a power sensor that reports the mean of the last `period_s` (as NVML's power usage on
    an H100 does over 1 s): idle, then a load step at STEP_AT. The reading at t is exact arithmetic on the
    step, so the expected values below are exact too."""
    times = [i / hz for i in range(int(until * hz) + 1)]

    def reading(t):
        loaded = min(max(t - STEP_AT, 0.0), period_s)
        return (IDLE_W * (period_s - loaded) + LOAD_W * loaded) / period_s + 1e-6 * (round(t * hz) % 2)

    rows = [{"gpu.power_w": reading(t)} for t in times]
    metric = Metric("gpu.power_w", "W", "power_w", "gpu0", period_s=period_s, period_note="test")
    return plan_energy([metric], 1.0 / hz), times, rows


def test_a_window_shorter_than_the_sensor_resolves_is_unresolved_not_a_number():
    plan, times, rows = _averaging_sensor()
    calc = EnergyCalculator(plan, times, rows)
    # today's default decode window on an H100: 150 ms right after the load starts
    out = window_metrics(calc, STEP_AT, STEP_AT + 0.15, "decode", tokens=128, idle_power_w=IDLE_W)
    assert set(out) == {"energy_decode_unresolved"}
    assert "shorter than 3 periods (1 s) of gpu.power_w" in out["energy_decode_unresolved"]


def test_a_window_in_the_ramp_of_an_averaging_sensor_reads_the_load_not_the_ramp():
    plan, times, rows = _averaging_sensor()
    calc = EnergyCalculator(plan, times, rows)
    # A 3 s window opening at the step: integrating every reading in it (the old way) averages the 1 s
    # ramp in (about 350 W); readings taken a period in see only the load.
    t0, t1 = STEP_AT, STEP_AT + 3.0
    inside = [(t, r["gpu.power_w"]) for t, r in zip(times, rows) if t0 <= t <= t1]
    naive = np.trapezoid([p for _, p in inside], [t for t, _ in inside]) / (t1 - t0)
    assert naive < 0.9 * LOAD_W
    out = window_metrics(calc, t0, t1, "decode", tokens=3000, idle_power_w=IDLE_W)
    assert out["power_decode_w_mean"] == pytest.approx(LOAD_W, abs=1e-3)
    assert out["j_per_token_decode"] == pytest.approx(LOAD_W * 3.0 / 3000, rel=1e-6)
    assert out["j_per_token_decode_above_idle"] == pytest.approx((LOAD_W - IDLE_W) * 3.0 / 3000, rel=1e-6)
    assert out["energy_decode_window_s"] == pytest.approx(3.0)


def test_the_finest_source_that_resolves_the_window_is_used():
    counter = Metric("g.energy_j", "J", "energy_j", "gpu0", period_s=2.0, period_note="read every 2 s")
    power = Metric("g.power_w", "W", "power_w", "gpu0", period_s=0.1, period_note="instant")
    plan = plan_energy([counter, power], 0.1)
    assert [src.metric for src in plan.domains["gpu0"]] == ["g.power_w", "g.energy_j"]
    assert plan.required_window_s == pytest.approx(RESOLVE_PERIODS * 0.1)
    times = [i / 10 for i in range(101)]
    rows = [{"g.power_w": 200.0 + (i % 2) * 1e-3, **({"g.energy_j": 200.0 * t} if i % 20 == 0 else {})}
            for i, t in enumerate(times)]
    calc = EnergyCalculator(plan, times, rows)
    assert calc.window_power(1.0, 3.0).sources == ["g.power_w"]
    # the power stream dies after 5 s: a window past it falls back to the counter (read every 2 s)
    rows = [row if t < 5 else {k: v for k, v in row.items() if k != "g.power_w"} for t, row in zip(times, rows)]
    late = EnergyCalculator(plan, times, rows).window_power(3.0, 10.0)
    assert late.sources == ["g.energy_j"] and late.mean_w == pytest.approx(200.0)
    assert EnergyCalculator(plan, times, rows).window_power(5.5, 10.0).mean_w is None  # 4.5 s < 3 x 2 s


def test_a_stale_source_resolves_nothing():
    metric = Metric("t.power_w", "W", "power_w", "board", "board", period_s=0.1)
    times = [i / 10 for i in range(40)]
    rows = [{"t.power_w": 7.5} for _ in times]  # a dead tegrastats keeps serving its last line
    out = window_metrics(EnergyCalculator(plan_energy([metric]), times, rows), 0.5, 3.5, "decode", 10, None)
    assert "stale" in out["energy_decode_unresolved"]


def test_change_interval_is_measured():
    state = {"t0": None}

    def every_20ms():
        import time

        now = time.perf_counter()
        state["t0"] = state["t0"] or now
        return float(int((now - state["t0"]) / 0.02))

    interval = measure_change_interval_s(every_20ms, budget_s=0.3, poll_s=0.001)
    # A change is seen at the first poll after it: each measured gap is 20 ms give or take one poll's delay
    # (1 ms asked, several on a loaded host); the median of ~14 gaps stays well inside [15, 40] ms.
    assert interval is not None and 0.015 <= interval <= 0.04
    assert measure_change_interval_s(lambda: 1.0, budget_s=0.05) is None


def test_energy_pass_plan_covers_the_sensor_and_holds_windows_back_to_back():
    assert plan_energy_pass(0, 3.0, 1.0, 3) is None  # --energy-window 0: no pass
    plan = plan_energy_pass(2.0, 3.0, 1.0, 3)
    assert plan == EnergyPassPlan(window_s=3.0, windows=3, settle_s=1.0)
    calls = []
    quick = EnergyPassPlan(window_s=0.05, windows=3, settle_s=0.02)
    windows = hold(lambda: calls.append(1), 4, quick)
    assert len(windows) == 3
    for (a0, a1, tokens), (b0, _, _) in zip(windows, windows[1:]):
        assert a1 == b0  # abutting: the load never pauses between windows
    for t0, t1, tokens in windows:
        assert t1 - t0 >= 0.05 and tokens % 4 == 0 and tokens > 0
