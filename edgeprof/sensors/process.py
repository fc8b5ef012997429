"""The host and the measured process through psutil: CPU utilisation and frequency, memory available,
and the worker's resident memory (the runner points it at each configuration's child process).

The worker's RSS is read every tick (one small /proc read). Host-wide figures are read at 2 Hz: per-core
utilisation and frequency cost 0.2 and 0.5 ms per read on a 16-core host, and at 10 Hz they alone would
put the sampler over its 1 %-of-a-core budget.
"""

from __future__ import annotations

import psutil

from edgeprof.sensors.base import Availability, Metric


class ProcessSensor:
    name = "process"

    HOST_HZ = 2.0

    def __init__(self, sample_hz: float = 10.0) -> None:
        self._target: psutil.Process | None = None
        self._has_freq = False
        self._cores = psutil.cpu_count() or 1
        self._host_every = max(1, round(sample_hz / self.HOST_HZ))
        self._tick = 0

    def set_target(self, pid: int | None) -> None:
        """Measure this process's RSS from now on (None: stop)."""
        try:
            self._target = psutil.Process(pid) if pid else None
        except psutil.Error:
            self._target = None

    def probe(self) -> Availability:
        psutil.cpu_percent(percpu=True)  # primes the per-core counters
        try:
            freq = psutil.cpu_freq()
            self._has_freq = bool(freq and freq.current)
        except (OSError, NotImplementedError):
            self._has_freq = False
        return Availability(True, f"{self._cores} CPUs" + ("" if self._has_freq else "; CPU frequency not reported"))

    def metrics(self) -> list[Metric]:
        metrics = [Metric(f"process.cpu{i}.util_pct", "%", "util_pct") for i in range(self._cores)]
        metrics += [Metric("process.cpu.util_pct", "%", "util_pct"), Metric("process.mem_available_mb", "MB", "mem_mb"),
                    Metric("process.worker_rss_mb", "MB", "mem_mb")]
        if self._has_freq:
            metrics.append(Metric("process.cpu_freq_mhz", "MHz", "clock_mhz"))
        return metrics

    def read(self) -> dict[str, float]:
        values: dict[str, float] = {}
        if self._tick % self._host_every == 0:
            per_core = psutil.cpu_percent(percpu=True)
            values.update({f"process.cpu{i}.util_pct": v for i, v in enumerate(per_core)})
            values["process.cpu.util_pct"] = sum(per_core) / max(len(per_core), 1)
            values["process.mem_available_mb"] = psutil.virtual_memory().available / 2**20
            if self._has_freq:
                freq = psutil.cpu_freq()
                if freq and freq.current:
                    values["process.cpu_freq_mhz"] = freq.current
        self._tick += 1
        target = self._target
        if target is not None:
            try:
                values["process.worker_rss_mb"] = target.memory_info().rss / 2**20
            except psutil.Error:
                self._target = None
        return values

    def close(self) -> None:
        self._target = None
