"""`edgeprof run --live`: the run's own sampler's latest readings, rendered without reading any sensor."""

from __future__ import annotations

import io

from rich.console import Console

from edgeprof.sensors.base import Availability, Metric
from edgeprof.sensors.live import LiveReadout
from edgeprof.sensors.sampler import Sampler


class FakeGpuSensor:
    """Power every read; temperature, clocks and memory only on the first (as a throttled sensor leaves gaps)."""

    name = "fake"

    def __init__(self):
        self.reads = 0

    def probe(self) -> Availability:
        return Availability(True)

    def metrics(self) -> list[Metric]:
        return [Metric("fake.gpu0.power_w", "W", "power_w", "gpu0"), Metric("fake.gpu0.temp_c", "C", "temp_c"),
                Metric("fake.gpu0.sm_clock_mhz", "MHz", "clock_mhz"), Metric("fake.gpu0.mem_used_mb", "MB", "mem_mb"),
                Metric("process.cpu0.util_pct", "%", "util_pct"), Metric("process.cpu.util_pct", "%", "util_pct"),
                Metric("fake.gpu0.energy_j", "J", "energy_j", "gpu0")]

    def read(self) -> dict[str, float]:
        self.reads += 1
        power = {"fake.gpu0.power_w": 250.0 + self.reads, "process.cpu0.util_pct": 99.0, "process.cpu.util_pct": 50.0}
        if self.reads == 1:
            return {**power, "fake.gpu0.temp_c": 61.0, "fake.gpu0.sm_clock_mhz": 1980.0, "fake.gpu0.mem_used_mb": 1223.0}
        return power

    def close(self) -> None: ...


def _render(readout: LiveReadout) -> str:
    console = Console(file=io.StringIO(), width=100, record=True, color_system=None)
    console.print(readout)
    return console.export_text()


def test_the_live_view_renders_the_samplers_latest_readings_without_reading_a_sensor():
    sensor = FakeGpuSensor()
    sampler = Sampler([sensor], hz=10)
    readout = LiveReadout()
    assert "waiting for the sensors" in _render(readout)
    sampler.sample_now()  # no thread started: each call is one sample, taken here
    sampler.sample_now()
    readout.attach(sampler.latest, sensor.metrics())
    reads = sensor.reads
    text = _render(readout) + _render(readout)
    assert sensor.reads == reads  # rendering read nothing: the worker's measurement sees no extra load
    assert "252.0 W" in text  # the newest power, from the second sample
    assert "61.0 °C" in text and "1,980.0 MHz" in text and "1,223.0 MB" in text  # kept from the first
    lines = text.splitlines()
    assert any(line.split()[:1] == ["power"] for line in lines) and any(line.split()[:1] == ["temperature"] for line in lines)
    assert "process cpu0" not in text and "process cpu util" in text  # per-core rows left out, their mean shown
    assert "energy" not in text  # a cumulative counter says nothing at a glance


def test_a_run_announces_its_sampler_to_a_live_view(tmp_path):
    from edgeprof.bench.execute import start_sensors

    events = []
    session = start_sensors(10.0, 0.0, tmp_path / "samples.csv", [], lambda name, **info: events.append((name, info)))
    try:
        (info,) = [info for name, info in events if name == "sensors_started"]
        readout = LiveReadout()
        readout.attach(info["latest"], info["metrics"])
        assert "process" in _render(readout)  # every host has the process sensor
    finally:
        session.close()
