"""GPU time of the CUDA kernels that ran inside each observed window, from CUPTI (`cupti-python`).

On a GPU, the wall time of an observed window is mostly the host launching kernels and waiting for the
device; a decode step's kernels take a few microseconds each, about what a launch costs. CUPTI's
activity records give each kernel's start and end on the GPU, in CUPTI's own clock; an offset to
`perf_counter_ns`, estimated from paired readings before every attribution, puts them on the windows'
clock. A kernel belongs to the window during which it started (windows are synchronised, so they do not
overlap); copies and kernels between windows are counted apart. Importing torch beside llama.cpp's CUDA build crashes, so torch's profiler is not an option;
CUPTI is the layer both torch and Nsight use.
"""

from __future__ import annotations

import bisect
import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

_DEMANGLED = re.compile(r"^\s*(?:(?:void|static|__global__)\s+)*([\w:]+)")


def kernel_base_name(name: str) -> str:
    """The function name of a kernel: `_Z13mul_mat_vec_qIL9ggml_type12ELi1EEvPKv...` -> `mul_mat_vec_q`,
    `void rms_norm_f32<1024>(const float *, ...)` -> `rms_norm_f32` (CUPTI gives mangled names, Nsight
    Compute demangled ones; both reduce to this)."""
    if name.startswith("_Z"):
        body = name[2:].removeprefix("L")  # L: internal linkage (a static kernel)
        if body.startswith("N"):  # nested: N <len><id> <len><id> ... E; the last component is the function
            body, parts = body[1:], []
            while body and body[0].isdigit():
                digits = re.match(r"\d+", body).group(0)
                length = int(digits)
                parts.append(body[len(digits):len(digits) + length])
                body = body[len(digits) + length:]
                if body.startswith("I"):  # template arguments of this component: the name is complete
                    break
            return parts[-1] if parts else name
        digits = re.match(r"\d+", body)
        if digits:
            length = int(digits.group(0))
            return body[len(digits.group(0)):len(digits.group(0)) + length]
        return name
    found = _DEMANGLED.match(name)
    return found.group(1).split("::")[-1] if found else name


@dataclass
class KernelTimer:
    """Collects CUPTI kernel records and assigns them to perf_counter windows."""

    cupti: object
    records: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, name), CUPTI clock
    last_kernels: list[tuple[int, str, int]] = field(default_factory=list)  # (window, base name, ns)
    outside_ns: float = 0.0  # device work of the last call that ran outside every window
    _kinds: tuple = ()

    def start(self) -> None:
        cupti = self.cupti
        kinds = (cupti.ActivityKind.CONCURRENT_KERNEL, cupti.ActivityKind.MEMCPY, cupti.ActivityKind.MEMSET)
        names = {cupti.ActivityKind.MEMCPY: "memcpy", cupti.ActivityKind.MEMSET: "memset"}

        def requested():
            return 8 * 1024 * 1024, 0

        def completed(activities) -> None:
            for activity in activities:
                if activity.kind in kinds:
                    self.records.append((activity.start, activity.end, names.get(activity.kind) or activity.name))

        cupti.activity_register_callbacks(requested, completed)
        self._kinds = kinds
        self.resume()

    def pause(self) -> None:
        """Stop recording (CUPTI's tracing slows launches: the plain reference step runs without it)."""
        self.cupti.activity_flush_all(1)
        for kind in self._kinds:
            self.cupti.activity_disable(kind)
        self.records.clear()

    def resume(self) -> None:
        for kind in self._kinds:
            self.cupti.activity_enable(kind)

    def stop(self) -> None:
        self.pause()

    def begin(self) -> None:
        """Before a call: forget earlier kernels (flushed first, so none of them arrives later)."""
        self.cupti.activity_flush_all(1)
        self.records.clear()

    def _offset_ns(self) -> int:
        """CUPTI clock minus perf_counter_ns, from the tightest of a few paired readings."""
        best = None
        for _ in range(5):
            before = time.perf_counter_ns()
            stamp = self.cupti.get_timestamp()
            after = time.perf_counter_ns()
            if best is None or after - before < best[0]:
                best = (after - before, stamp - (before + after) // 2)
        return best[1]

    def per_window(self, spans: list[tuple[int, int]], split: frozenset[str] = frozenset()) -> list[tuple[float, float]]:
        """For each perf_counter span of the call just made: GPU ns of the kernels that started in it, and
        the part of those ns spent in kernels named in `split`. Device work that started between windows
        (the logits copy after the graph, for one) is summed in `outside_ns`."""
        self.cupti.activity_flush_all(1)
        offset = self._offset_ns()
        begins = [begin + offset for begin, _ in spans]
        ends = [end + offset for _, end in spans]
        totals = [[0.0, 0.0] for _ in spans]
        self.last_kernels, self.outside_ns = [], 0.0
        for start, end, name in sorted(self.records):
            window = bisect.bisect_right(begins, start) - 1
            if window < 0 or start > ends[window]:
                self.outside_ns += end - start
                continue
            base = kernel_base_name(name)
            totals[window][0] += end - start
            if base in split:
                totals[window][1] += end - start
            self.last_kernels.append((window, base, end - start))
        self.records.clear()
        return [(total, part) for total, part in totals]


@contextlib.contextmanager
def kernel_timer() -> Iterator[KernelTimer | None]:
    """A started KernelTimer, or None where cupti-python is not installed or CUPTI cannot start (the
    profiler then times windows by wall clock and says so)."""
    try:
        from cupti import cupti
    except ImportError:
        yield None
        return
    timer = KernelTimer(cupti)
    try:
        timer.start()
    except Exception:  # noqa: BLE001 - a driver without CUPTI support: profile without kernel times
        yield None
        return
    try:
        yield timer
    finally:
        timer.stop()


def categorise_by_alignment(plain: list[tuple[str, float]], profiled: list[list]) -> tuple[dict[str, float], float]:
    """Category ns of a kernel sequence timed without windows (plain step: CUPTI or Nsight Compute), by
    aligning its kernel names with a profiled step's (category, name, ns) sequence; and the ns of plain
    kernels that found no partner (work the two graphs do differently)."""
    import difflib

    names = [kernel_base_name(name) for name, _ in plain]
    matcher = difflib.SequenceMatcher(a=names, b=[name for _, name, _ in profiled], autojunk=False)
    totals: dict[str, float] = {}
    matched = set()
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            category = profiled[block.b + offset][0]
            totals[category] = totals.get(category, 0.0) + plain[block.a + offset][1]
            matched.add(block.a + offset)
    unmatched = sum(ns for i, (_, ns) in enumerate(plain) if i not in matched)
    return totals, unmatched
