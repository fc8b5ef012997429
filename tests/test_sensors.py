import json
import subprocess
import sys
import time

import numpy as np
import pytest

from edgeprof.errors import ConfigError
from edgeprof.sensors import rapl as rapl_module
from edgeprof.sensors.base import Metric
from edgeprof.sensors.battery import BatterySensor
from edgeprof.sensors.energy import EnergyCalculator, plan_energy, window_metrics
from edgeprof.sensors.hwmon import HwmonSensor
from edgeprof.sensors.jetson import Ina3221Sensor, TegrastatsSensor, jetson_facts, parse_jetson_clocks
from edgeprof.sensors.nvml import NvmlSensor
from edgeprof.sensors.rapl import RaplSensor
from edgeprof.sensors.sampler import Sampler
from edgeprof.sensors.thermal import ThermalZonesSensor
from fake_sensors import ConstantPowerSensor, FakeNvml, write
from test_tegrastats import NANO, ORIN


def _rapl_tree(root):
    write(root / "intel-rapl:0/name", "package-0")
    write(root / "intel-rapl:0/energy_uj", "1000000")
    write(root / "intel-rapl:0/max_energy_range_uj", "262143328850")
    write(root / "intel-rapl:0:0/name", "core")
    write(root / "intel-rapl:0:0/energy_uj", "5")
    write(root / "intel-rapl:0:0/max_energy_range_uj", "262143328850")
    write(root / "intel-rapl:0:2/name", "dram")
    write(root / "intel-rapl:0:2/energy_uj", "2000000")
    write(root / "intel-rapl:0:2/max_energy_range_uj", "262143328850")


def test_rapl_domains_and_wraparound(tmp_path):
    _rapl_tree(tmp_path)
    sensor = RaplSensor(tmp_path)
    assert sensor.probe().available
    assert [m.domain for m in sensor.metrics()] == ["cpu-package-0", "dram-0"]  # core is inside the package
    assert sensor.read()["rapl.cpu-package-0.energy_j"] == pytest.approx(1.0)
    write(tmp_path / "intel-rapl:0/energy_uj", "262143000000")
    assert sensor.read()["rapl.cpu-package-0.energy_j"] == pytest.approx(262143.0)
    write(tmp_path / "intel-rapl:0/energy_uj", "500000")  # wrapped past max_energy_range_uj
    assert sensor.read()["rapl.cpu-package-0.energy_j"] == pytest.approx((262143328850 + 1 + 500000) / 1e6)


def test_rapl_permission_error_says_how_to_fix(tmp_path, monkeypatch):
    _rapl_tree(tmp_path)

    def denied(path, scale=1.0):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied")
        return float(open(path).read()) * scale

    monkeypatch.setattr(rapl_module, "read_number", denied)
    availability = RaplSensor(tmp_path).probe()
    assert not availability.available and "root" in availability.reason and "chmod" in availability.fix


def test_rapl_absent(tmp_path):
    assert "no powercap" in RaplSensor(tmp_path / "nothing").probe().reason


def test_thermal_zones_skip_off_and_unreadable_sensors(tmp_path):
    write(tmp_path / "thermal_zone0/type", "x86_pkg_temp")
    write(tmp_path / "thermal_zone0/temp", "45000")
    write(tmp_path / "thermal_zone1/type", "acpitz")
    write(tmp_path / "thermal_zone1/temp", "-273000")
    write(tmp_path / "thermal_zone2/type", "x86_pkg_temp")
    write(tmp_path / "thermal_zone2/temp", "51500")
    write(tmp_path / "thermal_zone3/type", "broken")
    sensor = ThermalZonesSensor(tmp_path)
    assert sensor.probe().available
    assert sensor.read() == {"thermal.x86_pkg_temp.temp_c": 45.0, "thermal.x86_pkg_temp.2.temp_c": 51.5}


def test_hwmon_temps_power_energy_and_ina3221_left_to_jetson(tmp_path):
    write(tmp_path / "hwmon0/name", "k10temp")
    write(tmp_path / "hwmon0/temp1_input", "50125")
    write(tmp_path / "hwmon0/temp1_label", "Tctl")
    write(tmp_path / "hwmon1/name", "amdgpu")
    write(tmp_path / "hwmon1/power1_average", "35000000")
    write(tmp_path / "hwmon1/energy1_input", "7000000")
    write(tmp_path / "hwmon2/name", "ina3221")
    write(tmp_path / "hwmon2/in1_input", "5000")
    sensor = HwmonSensor(tmp_path)
    assert sensor.probe().available
    values = sensor.read()
    assert values == {"hwmon.k10temp.Tctl.temp_c": pytest.approx(50.125), "hwmon.amdgpu.power1.power_w": 35.0,
                      "hwmon.amdgpu.energy1.energy_j": 7.0}


def test_battery_only_while_discharging(tmp_path):
    write(tmp_path / "BAT0/status", "Charging")
    write(tmp_path / "BAT0/power_now", "12000000")
    charging = BatterySensor(tmp_path).probe()
    assert not charging.available and "charging" in charging.reason and charging.fix
    write(tmp_path / "BAT0/status", "Discharging")
    sensor = BatterySensor(tmp_path)
    assert sensor.probe().available and sensor.read() == {"battery.power_w": 12.0}
    (tmp_path / "BAT0/power_now").unlink()
    write(tmp_path / "BAT0/current_now", "1500000")
    write(tmp_path / "BAT0/voltage_now", "11000000")
    assert sensor.read()["battery.power_w"] == pytest.approx(16.5)
    assert sensor.metrics()[0].scope == "board"


def test_ina3221_newer_hwmon_layout(tmp_path):
    base = tmp_path / "ina3221/1-0040/hwmon/hwmon3"
    for index, (label, mv, ma) in enumerate([("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 5000, 300),
                                              ("VDD_SOC", 5000, 500)], start=1):
        write(base / f"in{index}_label", label)
        write(base / f"in{index}_input", str(mv))
        write(base / f"curr{index}_input", str(ma))
    write(base / "in7_label", "sum of shunt voltages")
    write(base / "in7_input", "10")
    write(base / "curr7_input", "10")
    sensor = Ina3221Sensor(tmp_path)
    assert sensor.probe().available
    assert sensor.read() == {"jetson.VDD_IN.power_w": 6.0, "jetson.VDD_CPU_GPU_CV.power_w": 1.5,
                             "jetson.VDD_SOC.power_w": 2.5}
    plan = plan_energy(sensor.metrics())
    assert plan.total == ["board"]  # the input rail alone: the other rails are parts of it


def test_ina3221_older_iio_layout(tmp_path):
    base = tmp_path / "ina3221x/6-0040/iio:device0"
    for index, (name, mw) in enumerate([("POM_5V_IN", 4520), ("POM_5V_GPU", 0), ("POM_5V_CPU", 1078)]):
        write(base / f"rail_name_{index}", name)
        write(base / f"in_power{index}_input", str(mw))
    sensor = Ina3221Sensor(tmp_path)
    assert sensor.probe().available
    assert sensor.read()["jetson.POM_5V_IN.power_w"] == pytest.approx(4.52)
    assert plan_energy(sensor.metrics()).note.startswith("board input")


def test_nvml_reads_every_metric_and_names_throttling():
    fake = FakeNvml(power_w=300, throttle_mask=0x4 | 0x1)
    sensor = NvmlSensor(load_module=lambda: fake)
    assert sensor.probe().available
    values = sensor.read()
    assert values["nvml.gpu0.power_w"] == 300 and values["nvml.gpu0.temp_c"] == 61
    assert values["nvml.gpu0.mem_used_mb"] == 4096 and values["nvml.gpu0.sm_clock_mhz"] == 1980
    # FakeNvml has no instantaneous power field: power usage is a 1 s average, so the cheap counter is finer
    assert plan_energy(sensor.metrics()).domains["gpu0"][0].kind == "counter"
    sensor.close()
    assert fake.shutdowns == 1


def test_nvml_that_initialises_but_answers_not_supported_is_unavailable():
    sensor = NvmlSensor(load_module=lambda: FakeNvml(supported=False))
    availability = sensor.probe()
    assert not availability.available and "NotSupported" in availability.reason


def test_nvml_missing_module():
    def missing():
        raise ImportError("no pynvml")

    assert "nvidia-ml-py" in NvmlSensor(load_module=missing).probe().reason


def _metric(name, kind, domain, scope="component"):
    return Metric(name, "W" if kind == "power_w" else "J", kind, domain, scope)


def test_energy_counter_and_integrated_power_agree_from_readings_inside_the_window():
    times = [i / 10 for i in range(21)]  # 2 s at 10 Hz
    # power rises 10 W/s from 100 W; the counter is its exact integral
    rows = [{"p.power_w": 100.0 + 10 * t, "c.energy_j": 5000 + 100.0 * t + 5 * t * t} for t in times]
    for metric in (_metric("p.power_w", "power_w", "gpu0"), _metric("c.energy_j", "energy_j", "gpu0")):
        calc = EnergyCalculator(plan_energy([metric]), times, rows)
        # exact: 110 J over [0.5, 1.5]. The counter's reads sit on the edges; power readings are taken one
        # period (0.1 s) into the window, which on this ramp reads 0.5 W high: hence 1 %.
        assert calc.energy_j(0.5, 1.5) == pytest.approx(110.0, rel=0.01)
        assert calc.energy_j(1.9, 2.5) is None  # too few readings inside: not invented
        out = window_metrics(calc, 0.5, 1.5, "decode", tokens=50, idle_power_w=20.0)
        assert out["j_per_token_decode"] == pytest.approx(2.2, rel=0.01)
        assert out["energy_decode_above_idle_j"] == pytest.approx(90.0, rel=0.02)
        assert 100 < out["power_decode_w_p50"] < 120


def test_total_prefers_board_then_sums_components():
    gpu = _metric("nvml.gpu0.energy_j", "energy_j", "gpu0")
    cpu = _metric("rapl.cpu-package-0.energy_j", "energy_j", "cpu-package-0")
    rail = _metric("jetson.VDD_SOC.power_w", "power_w", "rail.VDD_SOC")
    board = _metric("jetson.VDD_IN.power_w", "power_w", "board", "board")
    assert plan_energy([gpu, cpu, rail]).total == ["gpu0", "cpu-package-0"]
    assert plan_energy([gpu, rail, board]).total == ["board"]
    assert "component rails" in plan_energy([rail]).note
    assert not plan_energy([]).available


def test_sampler_rate_and_failing_sensor():
    class Failing:
        name = "failing"

        def read(self):
            raise OSError("gone")

    good = ConstantPowerSensor()
    sampler = Sampler([good, Failing()], hz=50)
    sampler.start()
    time.sleep(0.4)
    sampler.stop()
    assert 12 <= len(sampler.times) <= 30
    assert np.all(np.diff(sampler.times) > 0)
    assert sampler.read_errors == {"failing": len(sampler.times)}
    assert all(row["constant.power_w"] == pytest.approx(10.0) for row in sampler.rows)


def test_tegrastats_sensor_reads_a_live_process():
    script = f"import time\nwhile True:\n    print({NANO!r}, flush=True)\n    time.sleep(0.05)"
    sensor = TegrastatsSensor(command=[sys.executable, "-c", script])
    try:
        availability = sensor.probe()
        assert availability.available and "POM_5V_IN" in availability.reason
        assert sensor.read()["jetson.POM_5V_IN.power_w"] == pytest.approx(4.52)
        assert plan_energy(sensor.metrics()).total == ["board"]
    finally:
        sensor.close()


def test_jetson_facts_on_a_fake_root(tmp_path):
    write(tmp_path / "proc/device-tree/model", "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit\x00")
    write(tmp_path / "etc/nv_tegra_release", "# R36 (release), REVISION: 4.0, GCID: 1\n")
    outputs = {"nvpmodel": "NV Power Mode: 15W\n0\n",
               "jetson_clocks": "cpu0: Online=1 Governor=schedutil MinFreq=1510400 MaxFreq=1510400 CurrentFreq=1510400\n"
                                "cpu1: Online=1 Governor=schedutil MinFreq=1510400 MaxFreq=1510400 CurrentFreq=1510400\n"}
    facts = jetson_facts(tmp_path, run=lambda cmd: outputs.get(cmd[0], ""))
    assert facts["model"].startswith("NVIDIA Jetson Orin Nano") and facts["nvpmodel_mode"] == "15W"
    assert facts["jetson_clocks"] is True and facts["l4t_release"].startswith("R36")
    assert parse_jetson_clocks("cpu0: Online=1 MinFreq=729600 MaxFreq=1510400") is False
    assert jetson_facts(tmp_path / "not-a-jetson") == {}


def test_cli_sensors_json_once_says_why_not():
    result = subprocess.run([sys.executable, "-m", "edgeprof", "sensors", "--json", "--once"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["sensors"]["process"]["available"]
    for name in ("rapl", "nvml", "tegrastats", "battery"):
        state = data["sensors"][name]
        assert state["available"] or state["reason"], name  # an absent sensor always says why
    assert "process.mem_available_mb" in data["reading"]


def test_cli_summarises_a_tegrastats_log(tmp_path):
    log = write(tmp_path / "tegrastats.log", "\n".join([ORIN] * 10) + "\n")
    result = subprocess.run([sys.executable, "-m", "edgeprof", "sensors", "--tegrastats-log", str(log), "--json",
                             "--interval-ms", "500"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["lines"] == 10 and summary["board_power_source"] == "VDD_IN"
    assert summary["power_w_mean"] == pytest.approx(5.251) and summary["energy_j"] == pytest.approx(5.251 * 5)
    bad = write(tmp_path / "empty.log", "nothing here\n")
    result = subprocess.run([sys.executable, "-m", "edgeprof", "sensors", "--tegrastats-log", str(bad)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no tegrastats lines" in result.stderr


def test_expensive_energy_counter_is_read_slowly_and_power_is_integrated_instead():
    class SlowCounterNvml(FakeNvml):
        def nvmlDeviceGetTotalEnergyConsumption(self, h):
            time.sleep(0.002)  # the real call took ~4 ms on an H100 host
            return super().nvmlDeviceGetTotalEnergyConsumption(h)

    sensor = NvmlSensor(load_module=lambda: SlowCounterNvml(), sample_hz=10)
    assert sensor.probe().available
    energy = next(m for m in sensor.metrics() if m.kind == "energy_j")
    assert energy.slow_read_ms and energy.slow_read_ms >= 2
    reads = [sensor.read() for _ in range(40)]
    assert sum("nvml.gpu0.energy_j" in r for r in reads) == 2  # every 2 s at 10 Hz
    assert all("nvml.gpu0.power_w" in r for r in reads)
    plan = plan_energy(sensor.metrics())
    counter = next(src for src in plan.domains["gpu0"] if src.kind == "counter")
    assert counter.period_s == 2.0 and "read every 2 s" in counter.note
    assert plan.domains["gpu0"][0].metric == "nvml.gpu0.power_w"  # 1 s averaged power is finer than 2 s reads


def test_nvml_first_slow_call_does_not_mark_a_cheap_metric_slow():
    class FirstCallSlow(FakeNvml):
        calls = 0

        def nvmlDeviceGetPowerUsage(self, h):
            FirstCallSlow.calls += 1
            if FirstCallSlow.calls == 1:
                time.sleep(0.005)
            return super().nvmlDeviceGetPowerUsage(h)

    sensor = NvmlSensor(load_module=lambda: FirstCallSlow(), sample_hz=10)
    sensor.probe()
    power = next(m for m in sensor.metrics() if m.kind == "power_w")
    assert power.slow_read_ms is None
    assert all("nvml.gpu0.power_w" in sensor.read() for _ in range(5))


def test_process_sensor_reads_host_figures_at_2hz_and_worker_rss_every_tick():
    import os

    from edgeprof.sensors.process import ProcessSensor

    sensor = ProcessSensor(sample_hz=10)
    sensor.probe()
    sensor.set_target(os.getpid())
    reads = [sensor.read() for _ in range(10)]
    assert sum("process.cpu.util_pct" in r for r in reads) == 2
    assert all(r["process.worker_rss_mb"] > 0 for r in reads)


def test_one_thread_reads_the_sensors_even_when_others_ask_for_a_sample():
    """sample_now() from other threads used to read the sensors itself, beside the sampler thread: RAPL's
    wrap tracking could then see a false wrap, and a late timestamp put rows out of order."""
    import threading

    class Recording(ConstantPowerSensor):
        def __init__(self):
            super().__init__()
            self.threads = set()

        def read(self):
            self.threads.add(threading.get_ident())
            time.sleep(0.001)  # a read that takes time, so concurrent readers would overlap
            return super().read()

    sensor = Recording()
    sampler = Sampler([sensor], hz=100)
    sampler.start()
    served = []

    def ask() -> None:
        for _ in range(20):
            before = time.perf_counter()
            sampler.sample_now()
            served.append(sampler.snapshot()[0][-1] > before)  # a sample taken after the request began

    askers = [threading.Thread(target=ask) for _ in range(3)]
    for thread in askers:
        thread.start()
    for thread in askers:
        thread.join()
    sampler_thread = sampler._thread.ident
    sampler.stop()
    assert sensor.threads == {threading.main_thread().ident, sampler_thread}  # start/stop read on main, alone
    assert np.all(np.diff(sampler.times) > 0)
    assert served == [True] * 60


def test_read_errors_are_counted_per_metric_and_reach_the_session(tmp_path):
    from edgeprof.sensors.base import SensorState
    from edgeprof.sensors.session import SensorSession

    _rapl_tree(tmp_path)
    sensor = RaplSensor(tmp_path)
    availability = sensor.probe()
    assert availability.available
    (tmp_path / "intel-rapl:0/energy_uj").unlink()  # the package counter disappears mid-run
    session = SensorSession([sensor], [SensorState("rapl", availability)], hz=50, idle_s=0)
    session.start()
    time.sleep(0.1)
    session.close()
    errors = session.describe()["read_errors"]
    assert errors["rapl:rapl.cpu-package-0.energy_j"] >= 3 and "rapl:rapl.dram-0.energy_j" not in errors


def test_a_dead_tegrastats_is_an_error_not_its_last_line_forever(tmp_path):
    script = tmp_path / "tegrastats"
    script.write_text(f"#!/bin/sh\necho '{ORIN}'\nsleep 0.3\n")  # one line, then it dies
    script.chmod(0o755)
    sensor = TegrastatsSensor(interval_ms=100, command=[str(script)])
    assert sensor.probe().available
    assert "jetson.VDD_IN.power_w" in sensor.read()
    time.sleep(1.2)
    with pytest.raises(RuntimeError, match="tegrastats"):
        sensor.read()
    sensor.close()


def test_rapl_psys_replaces_the_packages_instead_of_adding_to_them(tmp_path):
    _rapl_tree(tmp_path)
    write(tmp_path / "intel-rapl:1/name", "psys")
    write(tmp_path / "intel-rapl:1/energy_uj", "9000000")
    write(tmp_path / "intel-rapl:1/max_energy_range_uj", "262143328850")
    sensor = RaplSensor(tmp_path)
    assert sensor.probe().available
    plan = plan_energy(sensor.metrics() + [_metric("nvml.gpu0.power_w", "power_w", "gpu0")])
    assert plan.total == ["gpu0", "psys"] and "not added again" in plan.note


def test_a_run_measures_only_its_own_gpus():
    """On an 8-GPU server a one-GPU run must not sum seven idle boards into its energy, nor read GPU 0's
    memory when it ran on GPU 3."""
    from edgeprof.hardware.gpus import list_gpus, select_gpus

    fake = FakeNvml(count=4)
    gpus = list_gpus(load_module=lambda: fake)
    assert [g.uuid for g in gpus] == [f"GPU-fake-{i}" for i in range(4)]
    assert select_gpus("", gpus) == gpus[:1]  # one GPU by default
    assert select_gpus("", gpus, cuda_visible="GPU-fake-2,GPU-fake-3") == [gpus[2]]
    assert select_gpus("1,3", gpus) == [gpus[1], gpus[3]] and select_gpus("all", gpus, "2,3") == gpus[2:]
    with pytest.raises(ConfigError, match="no GPU '7'"):
        select_gpus("7", gpus)
    with pytest.raises(ConfigError, match="outside CUDA_VISIBLE_DEVICES"):
        select_gpus("0", gpus, cuda_visible="GPU-fake-3")
    sensor = NvmlSensor(load_module=lambda: fake, gpu_uuids=["GPU-fake-3"], period_budget_s=0.01)
    assert sensor.probe().available
    assert {m.name.split(".")[1] for m in sensor.metrics()} == {"gpu3"}
    plan = plan_energy(sensor.metrics())
    assert plan.total == ["gpu3"]
    none = NvmlSensor(load_module=lambda: fake, gpu_uuids=[], period_budget_s=0.01)  # a CPU-only run
    assert "uses none" in none.probe().reason


def test_the_worker_sees_only_the_runs_gpus(tmp_path):
    from edgeprof.bench.plan import expand
    from edgeprof.bench.runner import Runner, RunOptions
    from edgeprof.results.records import read_records
    from edgeprof.results.rundir import create_run_dir

    run_dir = create_run_dir(tmp_path)
    configs = expand(["synth:tiny"], ["q4_0"], ["llama.cpp"], {"prompt_tokens": [8], "gen_tokens": [4], "threads": [1]})
    Runner(run_dir, {"profile": "test"}, RunOptions(repetitions=1, warmup=0, gpu_uuids=("GPU-fake-3",))).run(configs)
    (record,) = read_records(run_dir.records_path)
    assert record["metrics"]["worker_gpus"] == "GPU-fake-3"
