"""The host and the measured process through psutil: CPU utilisation and frequency, memory available,
and the worker's resident memory (the runner points it at each configuration's child process)."""

from __future__ import annotations

import psutil

from edgeprof.sensors.base import Availability, Metric


class ProcessSensor:
    name = "process"

    FREQ_HZ = 2.0  # psutil reads one sysfs file per core for the frequency (~0.5 ms on 16 cores)

    def __init__(self, sample_hz: float = 10.0) -> None:
        self._target: psutil.Process | None = None
        self._has_freq = False
        self._cores = psutil.cpu_count() or 1
        self._freq_every = max(1, round(sample_hz / self.FREQ_HZ))
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
        per_core = psutil.cpu_percent(percpu=True)
        values = {f"process.cpu{i}.util_pct": v for i, v in enumerate(per_core)}
        values["process.cpu.util_pct"] = sum(per_core) / max(len(per_core), 1)
        values["process.mem_available_mb"] = psutil.virtual_memory().available / 2**20
        self._tick += 1
        if self._has_freq and self._tick % self._freq_every == 1 % self._freq_every:
            freq = psutil.cpu_freq()
            if freq and freq.current:
                values["process.cpu_freq_mhz"] = freq.current
        target = self._target
        if target is not None:
            try:
                values["process.worker_rss_mb"] = target.memory_info().rss / 2**20
            except psutil.Error:
                self._target = None
        return values

    def close(self) -> None:
        self._target = None
