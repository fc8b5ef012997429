"""A background thread that reads every available sensor at a fixed rate, and is the only thread that does.

Timestamps are `time.perf_counter()` seconds (CLOCK_MONOTONIC on Linux), the same clock the worker uses
for its phase marks, so samples and phases from two processes line up. The thread keeps its own CPU time
so its overhead can be reported.

Sensors keep state between reads (RAPL unfolds counter wraparound on every read), so two threads reading
them at once could see a false wrap worth hundreds of kJ, and a timestamp taken outside the read could put
rows out of order. So `sample_now()` from another thread asks the sampler thread for an extra sample and
waits for it; reads happen on one thread, and each row's time is taken right after its reads. A sensor
whose read raises is counted per sensor (`read_errors`), and the counts reach the run's manifest.
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
        self.read_errors: dict[str, int] = {}
        self.samples_taken = 0  # all ever taken; `times`/`rows` hold only those not yet trimmed
        self.thread_cpu_s = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()  # guards times/rows/_last for snapshot() and latest() readers
        self._last: dict[str, float] = {}  # each metric's newest value, for a live view
        self._wake = threading.Condition()
        self._requested = 0  # extra samples asked for by other threads
        self._taken = 0  # extra samples taken
        self._thread: threading.Thread | None = None

    def _read_all(self) -> None:
        row: dict[str, float] = {}
        for sensor in self.sensors:
            try:
                row.update(sensor.read())
            except Exception:  # noqa: BLE001 - one failing sensor must not end sampling; it is counted
                self.read_errors[sensor.name] = self.read_errors.get(sensor.name, 0) + 1
        now = time.perf_counter()
        with self._lock:
            self.times.append(now)
            self.rows.append(row)
            self._last.update(row)
            self.samples_taken += 1

    def sample_now(self, timeout_s: float = 5.0) -> None:
        """A sample taken after this call began: by the sampler thread when it runs, else here."""
        if self._thread is None or threading.current_thread() is self._thread:
            self._read_all()
            return
        with self._wake:
            self._requested += 1
            ticket = self._requested
            self._wake.notify_all()
            self._wake.wait_for(lambda: self._taken >= ticket or self._thread is None, timeout=timeout_s)

    def _loop(self) -> None:
        start_cpu = time.thread_time()
        deadline = time.perf_counter()
        while not self._stop.is_set():
            deadline += self.period_s
            with self._wake:
                self._wake.wait_for(lambda: self._stop.is_set() or self._requested > self._taken,
                                    timeout=max(deadline - time.perf_counter(), 0))
                extra = self._requested
            if self._stop.is_set():
                break
            self._read_all()
            if extra > self._taken:  # an extra sample was asked for: this one serves it
                with self._wake:
                    self._taken = extra
                    self._wake.notify_all()
                deadline = time.perf_counter()  # keep the fixed rate from here on
            elif deadline < time.perf_counter():  # fell behind (a slow sensor): skip ticks instead of bursting
                deadline = time.perf_counter()
        self.thread_cpu_s = time.thread_time() - start_cpu

    def start(self) -> None:
        """Take a first sample now, so any window that begins after start() is covered, then sample on."""
        self._read_all()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="edgeprof-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._wake:
            self._wake.notify_all()  # release anyone still waiting for an extra sample
        self._read_all()

    def snapshot(self, start_index: int = 0) -> tuple[list[float], list[dict[str, float]]]:
        with self._lock:
            return self.times[start_index:], self.rows[start_index:]

    def latest(self) -> dict[str, float]:
        """Each metric's most recent value (a throttled sensor leaves gaps between its reads; written and
        trimmed samples included), for a live view: what was already read, no read of its own."""
        with self._lock:
            return dict(self._last)

    def trim(self, count: int) -> None:
        """Forget the oldest `count` samples (already written to samples.csv and no longer needed)."""
        with self._lock:
            del self.times[:count]
            del self.rows[:count]
