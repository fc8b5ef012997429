"""A background thread that reads every available sensor at a fixed rate.

Timestamps are `time.perf_counter()` seconds (CLOCK_MONOTONIC on Linux), the same clock the worker uses
for its phase marks, so samples and phases from two processes line up. The thread keeps its own CPU time
so its overhead can be reported.
"""

from __future__ import annotations

import threading
import time

from edgeprof.sensors.base import Sensor


class Sampler:
    def __init__(self, sensors: list[Sensor], hz: float = 10.0):
        if hz <= 0:
            raise ValueError("sample rate must be > 0")
        self.sensors = sensors
        self.period_s = 1.0 / hz
        self.times: list[float] = []
        self.rows: list[dict[str, float]] = []
        self.read_errors = 0
        self.thread_cpu_s = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def sample_now(self) -> None:
        """Read every sensor once and append the row (safe to call from any thread)."""
        row: dict[str, float] = {}
        for sensor in self.sensors:
            try:
                row.update(sensor.read())
            except Exception:  # noqa: BLE001 - one failing sensor must not end sampling
                self.read_errors += 1
        now = time.perf_counter()
        with self._lock:
            self.times.append(now)
            self.rows.append(row)

    def _loop(self) -> None:
        start_cpu = time.thread_time()
        deadline = time.perf_counter()
        while not self._stop.is_set():
            deadline += self.period_s
            self._stop.wait(max(deadline - time.perf_counter(), 0))
            if self._stop.is_set():
                break
            self.sample_now()
            if deadline < time.perf_counter():  # fell behind (a slow sensor): skip ticks instead of bursting
                deadline = time.perf_counter()
        self.thread_cpu_s = time.thread_time() - start_cpu

    def start(self) -> None:
        """Take a first sample now, so any window that begins after start() is covered, then sample on."""
        self.sample_now()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="edgeprof-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sample_now()

    def snapshot(self, start_index: int = 0) -> tuple[list[float], list[dict[str, float]]]:
        with self._lock:
            return self.times[start_index:], self.rows[start_index:]
