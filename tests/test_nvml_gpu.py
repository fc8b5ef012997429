"""NVML on a real NVIDIA GPU: the energy counter and integrated power agree over a 20-second load."""

import subprocess
import sys
import time

import pytest

from edgeprof.sensors.base import Metric
from edgeprof.sensors.energy import EnergyCalculator, plan_energy
from edgeprof.sensors.nvml import NvmlSensor
from edgeprof.sensors.sampler import Sampler

LOAD = """
import time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
end = time.time() + {seconds}
while time.time() < end:
    for _ in range(20):
        b = a @ a
    torch.cuda.synchronize()
"""


@pytest.mark.gpu
def test_energy_counter_and_integrated_power_agree_under_load():
    sensor = NvmlSensor()
    availability = sensor.probe()
    assert availability.available, availability.reason
    names = {m.name for m in sensor.metrics()}
    assert {"nvml.gpu0.power_w", "nvml.gpu0.energy_j", "nvml.gpu0.temp_c", "nvml.gpu0.throttle"} <= names
    sampler = Sampler([sensor], hz=10)
    sampler.start()
    load = subprocess.Popen([sys.executable, "-c", LOAD.format(seconds=24)])
    time.sleep(3)  # let the load ramp up
    t0 = time.perf_counter()
    time.sleep(20)
    t1 = time.perf_counter()
    load.wait()
    sampler.stop()
    sensor.close()
    times, rows = sampler.snapshot()
    counter_plan = plan_energy([Metric("nvml.gpu0.energy_j", "J", "energy_j", "gpu0")])
    power_plan = plan_energy([Metric("nvml.gpu0.power_w", "W", "power_w", "gpu0")])
    by_counter = EnergyCalculator(counter_plan, times, rows).energy_j(t0, t1)
    by_power = EnergyCalculator(power_plan, times, rows).energy_j(t0, t1)
    print(f"20 s under load: counter {by_counter:.1f} J, integrated power {by_power:.1f} J, "
          f"mean {by_counter / (t1 - t0):.1f} W, samples {len(times)}")
    assert by_counter > 20 * 100  # an H100 under matmul load draws well over 100 W
    assert abs(by_power - by_counter) / by_counter < 0.05
