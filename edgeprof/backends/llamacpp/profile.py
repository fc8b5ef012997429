"""Operator time by category on llama.cpp, measured ("footsteps of operations"), CPU and CUDA.

Method. llama.cpp's scheduler asks an eval callback, node by node, whether the caller wants to see a
node; it computes every run of unwanted nodes together with the next wanted one as one graph, waits for
the backend, and calls back. Observing every node (936 for a SmolLM2-135M decode step) makes each its own
computation, dilates the step and inflates small operators (docs/benchmarks.md §15). Here a first pass
lists the nodes; each node gets its category
(`nodes`), and only the last node of each run of one category is observed, so consecutive nodes
of a category still compute as one graph: a Llama layer is six windows (norm, projections, attention,
projections, residual, norm, ffn...), not sixty nodes. Each window is timed from the moment the callback
lets the computation start to the moment it reports the end, which excludes the callback's own per-node
questions.

Correction. Every window still costs one extra launch and synchronisation (on a CPU, waking the OpenMP
team and its barrier). That cost is measured on the same host, in the same pass, by observing windows that
hold a single view node (a view computes nothing, so its window is pure overhead); the median is
subtracted from every window. Calibration windows run in their own decode steps, alternating with the
profiled ones, so they do not dilate the profiled steps.

On a GPU a window's wall time is dominated by launch and synchronisation, not by kernels; where CUPTI is
present (`cupti-python`), the windows only label kernels: prefill takes the GPU time of the kernels inside
each window, and decode the kernel times of plain (unobserved) steps, each kernel taking the label of its
partner in the observed step's sequence (`_plain_traced_decode` says why).

Reported per phase: ms and share per category, the plain step the shares are set against (a context on
the same weights without the callback, timed in rounds interleaved with the observed one), the dilation
(observed step / plain step) and the coverage (corrected sum / plain step: what the shares account for;
the rest is llama.cpp's own per-call work outside the graph, e.g. building inputs and copying logits).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from edgeprof.backends.llamacpp.nodes import EMPTY_OPS, Node, NodeReader, categorize, categorize_sequence
from edgeprof.backends.llamacpp.options import LlamaCppOptions
from edgeprof.backends.op_categories import OP_CATEGORIES
from edgeprof.backends.op_profile import OpProfile, PhaseOps
from edgeprof.config import Hyperparameters

MAX_PROFILED_STEPS = 16
ROUNDS = 3  # interleaved plain / observed rounds after one listing-and-warm-up round
CALIBRATION_WINDOWS = 32  # single-view windows per calibration step
METHOD_WALL = "eval-callback category windows, wall time minus calibrated per-window overhead"
METHOD_CUPTI = ("eval-callback category windows label each kernel; decode: CUPTI kernel time of plain steps, "
                "matched to the labels by kernel name; prefill: CUPTI kernel time per window")
PLAIN_TRACED_STEPS = 8
ADD_KERNELS = frozenset({"k_bin_bcast"})  # ggml-cuda's element-wise ADD when it runs as a kernel of its own


@dataclass(frozen=True)
class Window:
    """One observed computation: its category and layer; None for a calibration window, "skip" for the
    work between calibration windows. `absorbed`: a residual add kept in this matmul's window (see
    `plan_categories`); its own kernels, where it has any, are counted under it."""

    category: str | None
    layer: int | None
    absorbed: str | None = None


@dataclass
class CallPlan:
    """For one llama_decode call's node sequence: which nodes to observe, and what each window is."""

    observe: list[bool]
    windows: list[Window]


def plan_categories(nodes: list[Node], keep_fusions: bool = False) -> CallPlan:
    """Observe the last node of each run of one category (and the last node of the call).

    `keep_fusions` (GPU backends): a residual ADD right after a weight matmul joins the matmul's window.
    ggml-cuda fuses that add into its mat-vec kernel at small batches; a window boundary between them
    would split the fused kernel in two and time work the plain step never does (measured on the H100:
    31 extra kernels per Llama-3.2-1B decode step at batch 1). Where the add stays a kernel of its own,
    the kernel timer still counts it as "other"."""
    categorised = categorize_sequence(nodes)
    found = [item.category for item in categorised]
    layers = [item.layer for item in categorised]
    absorbed = [None] * len(nodes)
    if keep_fusions:
        last_work = None
        for index, node in enumerate(nodes):
            if node.op in EMPTY_OPS:
                found[index] = found[last_work] if last_work is not None else found[index]
                continue
            if (node.op == "ADD" and found[index] == "other" and last_work is not None
                    and nodes[last_work].op == "MUL_MAT" and found[last_work] in ("projections", "ffn")):
                found[index], absorbed[index] = found[last_work], "other"
            last_work = index
    observe, windows, window_absorbs, window_layer = [], [], None, None
    for index, category in enumerate(found):
        window_absorbs = window_absorbs or absorbed[index]
        window_layer = window_layer if window_layer is not None else layers[index]  # unnamed nodes have none
        last = index == len(found) - 1 or found[index + 1] != category
        observe.append(last)
        if last:
            windows.append(Window(category, window_layer, window_absorbs))
            window_absorbs = window_layer = None
    return CallPlan(observe, windows)


def plan_every_node(nodes: list[Node], keep_fusions: bool = False) -> CallPlan:
    """Observe every node on its own: the naive method, kept to measure what grouping saves."""
    return CallPlan([True] * len(nodes), [Window(f.category, f.layer) for f in categorize_sequence(nodes)])


def plan_calibration(nodes: list[Node], count: int = CALIBRATION_WINDOWS) -> CallPlan:
    """Observe `count` single empty (view) nodes, evenly spread, each in a window of its own; the node
    before each closes the window of the work before it, and the last node closes the call."""
    empties = [i for i, node in enumerate(nodes) if node.op in EMPTY_OPS and i > 0]
    chosen = set(empties[::max(1, len(empties) // count)][:count])
    observe = [False] * len(nodes)
    for index in chosen:
        observe[index - 1] = observe[index] = True
    observe[-1] = True
    windows = [Window(None, None) if i in chosen else Window("skip", None)
               for i, wanted in enumerate(observe) if wanted]
    return CallPlan(observe, windows)


@dataclass
class Observer:
    """The eval callback's state. Listing: record every node of each call. Observing: answer from the
    call's plan and timestamp each window's start (the answer that lets it compute) and end."""

    reader: NodeReader
    listing: bool = True
    calls: list[list[Node]] = field(default_factory=list)
    plan: CallPlan | None = None
    spans: list[tuple[int, int]] = field(default_factory=list)
    asked: int = 0
    _current: list[Node] = field(default_factory=list)
    _started: int = 0

    def callback(self, tensor, ask: bool, user_data) -> bool:
        if ask:
            if self.listing:
                self._current.append(self.reader.read(tensor))
                return False
            index = self.asked
            self.asked = index + 1
            if self.plan is not None and index < len(self.plan.observe) and self.plan.observe[index]:
                self._started = time.perf_counter_ns()
                return True
            return False
        self.spans.append((self._started, time.perf_counter_ns()))
        return True

    def call_done(self) -> None:
        """After each llama_decode call: keep the listed nodes, or check the plan was followed exactly."""
        if self.listing:
            self.calls.append(self._current)
            self._current = []
            return
        if self.plan is None or self.asked != len(self.plan.observe) or len(self.spans) != len(self.plan.windows):
            raise RuntimeError(f"llama.cpp's graph changed between passes ({self.asked} nodes, "
                               f"{len(self.spans)} windows; planned {len(self.plan.observe) if self.plan else 0})")

    def start_call(self, plan: CallPlan) -> None:
        self.plan, self.asked, self.spans = plan, 0, []


@dataclass
class CallTimes:
    """One observed call: each window's (ns, ns of split-off add kernels), and device work between windows."""

    windows: list[tuple[float, float]]
    outside_ns: float = 0.0
    kernels: list[tuple[int, str, float]] = field(default_factory=list)


class WindowClock:
    """Times an observed call's windows: wall clock (CPU), or the kernel timer's GPU time per window."""

    def __init__(self, observer: Observer, kernel_timer=None):
        self.observer, self.kernel_timer = observer, kernel_timer

    def begin(self, plan: CallPlan) -> None:
        self.observer.start_call(plan)
        if self.kernel_timer is not None:
            self.kernel_timer.begin()

    def end(self) -> CallTimes:
        self.observer.call_done()
        spans = self.observer.spans
        if self.kernel_timer is None:
            return CallTimes([(end - begin, 0.0) for begin, end in spans])
        windows = self.kernel_timer.per_window(spans, ADD_KERNELS)
        return CallTimes(windows, self.kernel_timer.outside_ns, list(self.kernel_timer.last_kernels))


def category_ms(plan: CallPlan, times: CallTimes, overhead_ns: float) -> tuple[dict, dict]:
    """Corrected ms per category and per (layer, category) for one call."""
    totals = dict.fromkeys(OP_CATEGORIES, 0.0)
    by_layer: dict[int, dict[str, float]] = {}

    def add(category: str, layer: int | None, ms: float) -> None:
        key = category if category in totals else "other"
        totals[key] += ms
        if layer is not None:
            per_layer = by_layer.setdefault(layer, {})
            per_layer[key] = per_layer.get(key, 0.0) + ms

    for window, (duration, split) in zip(plan.windows, times.windows):
        if window.category is None or window.category == "skip":
            continue
        if window.absorbed and split:
            add(window.absorbed, window.layer, split / 1e6)
            duration -= split
        add(window.category, window.layer, (duration - overhead_ns) / 1e6)
    return totals, by_layer


def _median_dict(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per key, the median over rows (a key a row lacks counts 0), floored at 0 after the correction."""
    keys = [k for k in OP_CATEGORIES if any(k in r for r in rows)]
    return {k: max(0.0, statistics.median(r.get(k, 0.0) for r in rows)) for k in keys}


def _phase_summary(per_call: list[dict[str, float]], outside_ms: list[float], plain_ms: list[float],
                   observed_ms: list[float], windows: int) -> dict:
    ms = _median_dict(per_call)
    node_ms = sum(ms.values())
    outside = statistics.median(outside_ms) if outside_ms else 0.0
    plain = statistics.median(plain_ms)
    return {
        "ms": ms,
        "share": {k: v / node_ms if node_ms else 0.0 for k, v in ms.items()},
        "node_ms": node_ms,  # the sum of the (corrected) category times
        "outside_ms": outside,  # GPU: device work between windows (e.g. the logits copy); CPU: 0
        "run_ms": plain,  # the plain (unobserved) step they are set against
        "run_ms_range": [min(plain_ms), max(plain_ms)],  # how much the plain step itself moved meanwhile
        "coverage": (node_ms + outside) / plain if plain else None,  # the reconstructed step / the plain step
        "dilation": statistics.median(observed_ms) / plain if plain else None,
        "windows": windows,
    }


def profile_ops(model_path: str, hp: Hyperparameters, prompts: np.ndarray, kernel_timer=None,
                planner: Callable[..., CallPlan] = plan_categories) -> OpProfile:
    """Profile prefill and up to MAX_PROFILED_STEPS decode steps of `hp`; see the module docstring.
    `kernel_timer`: a `cuda_kernels.KernelTimer` (GPU time per window) or None (wall time, corrected).
    `planner`: which nodes to observe (`plan_every_node` shows what the grouping saves)."""
    from edgeprof.backends.llamacpp.session import LlamaCppModel, LlamaCppSession
    from edgeprof.backends.llamacpp.lib import load_llama_cpp

    llama_cpp = load_llama_cpp()
    hp = hp.for_backend(LlamaCppOptions)
    steps = max(1, min(hp.gen_tokens, MAX_PROFILED_STEPS))
    # sampler none: the graph's work does not depend on which tokens are fed, and no host argmax is timed
    profiled_hp = replace(hp, gen_tokens=2 * steps, sampler="none", context=0)
    observer = Observer(NodeReader(llama_cpp.llama_cpp._lib))
    callback = llama_cpp.ggml_backend_sched_eval_callback(observer.callback)
    model = LlamaCppModel(model_path, hp.gpu_layers)
    plain = observed = None
    try:
        plain = LlamaCppSession(model_path, profiled_hp, model=model)
        observed = LlamaCppSession(model_path, profiled_hp, model=model, eval_callback=callback)
        if kernel_timer is not None:
            kernel_timer.pause()
        _run_round(plain, prompts, steps)  # warm-up
        prefill_calls, decode_nodes = _list_calls(observed, observer, prompts)
        on_gpu = hp.gpu_layers != 0
        plans = _Plans([planner(nodes, on_gpu) for nodes in prefill_calls], planner(decode_nodes, on_gpu),
                       plan_calibration(decode_nodes))
        result = _observe(plain, observed, WindowClock(observer, kernel_timer), prompts, steps, plans)
    finally:
        for session in (observed, plain):
            if session is not None:
                session.close()
        model.free()
    unmatched = sorted({node.name for node in decode_nodes + [n for call in prefill_calls for n in call]
                        if not categorize(node).matched})
    result.update({
        "method": METHOD_CUPTI if kernel_timer is not None else METHOD_WALL + (
            " (GPU without cupti-python: windows are launch-bound, shares approximate)" if hp.gpu_layers else ""),
        "nodes": {"prefill": sum(len(c) for c in prefill_calls), "decode": len(decode_nodes)},
        "unmatched_nodes": unmatched[:20],
        "rounds": ROUNDS,
    })
    return OpProfile("llama.cpp", result.pop("method"), PhaseOps.from_dict(result.pop("prefill")),
                     PhaseOps.from_dict(result.pop("decode")), steps, result.pop("decode_by_layer"), result)


def _list_calls(observed, observer: Observer, prompts: np.ndarray) -> tuple[list[list[Node]], list[Node]]:
    """One prefill and one decode step with the observer listing: the nodes of each llama_decode call."""
    observer.listing = True
    observer.calls.clear()
    observed.prefill_progress = lambda done, total: observer.call_done()
    observed.reset()
    observed.prefill(prompts)
    prefill_calls = list(observer.calls)
    observer.calls.clear()
    observed.decode_step()
    observer.call_done()
    decode_nodes = observer.calls[0]
    observer.listing = False
    observed.prefill_progress = None
    return prefill_calls, decode_nodes


def list_graph_nodes(model_path: str, hp: Hyperparameters, prompts: np.ndarray) -> tuple[list[list[Node]], list[Node]]:
    """The nodes llama.cpp computes for `hp`: per prefill call, and for one decode step (nothing timed)."""
    from edgeprof.backends.llamacpp.session import LlamaCppSession
    from edgeprof.backends.llamacpp.lib import load_llama_cpp

    llama_cpp = load_llama_cpp()
    observer = Observer(NodeReader(llama_cpp.llama_cpp._lib))
    callback = llama_cpp.ggml_backend_sched_eval_callback(observer.callback)
    session = LlamaCppSession(model_path, replace(hp, sampler="none"), eval_callback=callback)
    try:
        return _list_calls(session, observer, prompts)
    finally:
        session.close()


@dataclass
class _Plans:
    prefill: list[CallPlan]
    decode: CallPlan
    calibration: CallPlan


def _run_round(session, prompts: np.ndarray, steps: int) -> tuple[float, list[float]]:
    """Plain prefill and `steps` decode steps; wall ms of each."""
    session.reset()
    start = time.perf_counter_ns()
    session.prefill(prompts)
    prefill_ms = (time.perf_counter_ns() - start) / 1e6
    step_ms = []
    for _ in range(steps):
        start = time.perf_counter_ns()
        session.decode_step()
        step_ms.append((time.perf_counter_ns() - start) / 1e6)
    return prefill_ms, step_ms


def _observed_prefill(observed, clock: WindowClock, plans: list[CallPlan], prompts) -> tuple[float, list[CallTimes]]:
    """One observed prefill; the times of each of its llama_decode calls (chunks of n_batch tokens)."""
    queue, chunks = list(plans), []

    def next_chunk(done: int, total: int) -> None:
        chunks.append(clock.end())
        queue.pop(0)
        if queue:
            clock.begin(queue[0])

    observed.prefill_progress = next_chunk
    observed.reset()
    clock.begin(queue[0])
    start = time.perf_counter_ns()
    observed.prefill(prompts)
    wall_ms = (time.perf_counter_ns() - start) / 1e6
    observed.prefill_progress = None
    return wall_ms, chunks


def _observed_step(observed, clock: WindowClock, plan: CallPlan) -> tuple[float, CallTimes]:
    clock.begin(plan)
    start = time.perf_counter_ns()
    observed.decode_step()
    wall_ms = (time.perf_counter_ns() - start) / 1e6
    return wall_ms, clock.end()


def _observe(plain, observed, clock: WindowClock, prompts, steps: int, plans: _Plans) -> dict:
    timer = clock.kernel_timer
    plain_prefill, plain_steps, observed_prefill, observed_steps = [], [], [], []
    prefill_calls: list[list[CallTimes]] = []
    decode_calls: list[CallTimes] = []
    calibration: list[float] = []
    for _ in range(ROUNDS):
        # On a CPU the plain steps interleave with the observed ones step by step, so the host's drift
        # (10-30 % between minutes here) falls on both alike; on a GPU they run as a block before the
        # observed ones, because the kernel timer is switched off for them (its tracing slows launches).
        interleave = timer is None
        prefill_ms, step_ms = _run_round(plain, prompts, 0 if interleave else steps)
        plain_prefill.append(prefill_ms)
        plain_steps += step_ms
        if timer is not None:
            timer.resume()
        wall_ms, chunks = _observed_prefill(observed, clock, plans.prefill, prompts)
        observed_prefill.append(wall_ms)
        prefill_calls.append(chunks)
        for _ in range(steps):
            if interleave:
                start = time.perf_counter_ns()
                plain.decode_step()
                plain_steps.append((time.perf_counter_ns() - start) / 1e6)
            wall_ms, times = _observed_step(observed, clock, plans.decode)
            observed_steps.append(wall_ms)
            decode_calls.append(times)
            _, times = _observed_step(observed, clock, plans.calibration)
            calibration += [d for (d, _), w in zip(times.windows, plans.calibration.windows) if w.category is None]
        if timer is not None:
            timer.pause()
    overhead_ns = 0.0 if timer is not None else statistics.median(calibration)
    decode_ms, decode_layers = [], []
    for times in decode_calls:
        totals, by_layer = category_ms(plans.decode, times, overhead_ns)
        decode_ms.append(totals)
        decode_layers.append(by_layer)
    prefill_ms_rows, prefill_outside = [], []
    for chunks in prefill_calls:
        totals = dict.fromkeys(OP_CATEGORIES, 0.0)
        for plan, times in zip(plans.prefill, chunks):
            for key, value in category_ms(plan, times, overhead_ns)[0].items():
                totals[key] += value
        prefill_ms_rows.append(totals)
        prefill_outside.append(sum(t.outside_ns for t in chunks) / 1e6)
    layers = sorted({layer for by_layer in decode_layers for layer in by_layer})
    result = {
        "prefill": _phase_summary(prefill_ms_rows, prefill_outside, plain_prefill, observed_prefill,
                                  sum(len(p.windows) for p in plans.prefill)),
        "decode": _phase_summary(decode_ms, [t.outside_ns / 1e6 for t in decode_calls], plain_steps,
                                 observed_steps, len(plans.decode.windows)),
        "decode_by_layer": {str(layer): _median_dict([by.get(layer, {}) for by in decode_layers])
                            for layer in layers},
        "overhead_us_per_window": overhead_ns / 1e3,
        "calibration_windows": len(calibration),
    }
    if timer is not None:
        labelled = [[_kernel_category(plans.decode.windows[w], name), name, ns]
                    for w, name, ns in decode_calls[-1].kernels]
        result["decode_kernels"] = labelled  # the last profiled step's kernels: category, function, ns
        result["decode_windowed"] = result["decode"]
        result["decode"] = _plain_traced_decode(plain, prompts, timer, labelled, plain_steps, observed_steps,
                                                len(plans.decode.windows))
    return result


def _plain_traced_decode(plain, prompts, timer, labelled: list, plain_ms: list[float], observed_ms: list[float],
                         windows: int) -> dict:
    """Decode shares of the plain step itself (GPU). On the H100 the mat-vec kernels of a batch-1 step ran
    about 1.5x faster one window at a time than back to back in the plain step (Llama-3.2-1B q4_k_m:
    projections 0.30 vs 0.45 ms, while lm_head, attention and norms agreed within 0.01 ms), so the windows
    only label kernels; the times come from CUPTI over unobserved steps, each kernel taking the category
    of its partner in the labelled sequence (matched by function name). Plain kernels without a partner
    (the logits copy, fusions the windows prevent) are `unmatched_ms`, part of the reconstructed step."""
    from edgeprof.backends.llamacpp.cuda_kernels import categorise_by_alignment

    plain.reset()
    plain.prefill(prompts)
    rows, unmatched = [], []
    timer.resume()
    try:
        for _ in range(PLAIN_TRACED_STEPS):
            timer.begin()
            start = time.perf_counter_ns()
            plain.decode_step()
            timer.per_window([(start, time.perf_counter_ns())])
            totals, missed = categorise_by_alignment([(name, ns) for _, name, ns in timer.last_kernels], labelled)
            rows.append({c: totals.get(c, 0.0) / 1e6 for c in OP_CATEGORIES})
            unmatched.append((missed + timer.outside_ns) / 1e6)
    finally:
        timer.pause()
    summary = _phase_summary(rows, unmatched, plain_ms, observed_ms, windows)
    summary["unmatched_ms"] = summary.pop("outside_ms")
    summary["coverage"] = (summary["node_ms"] + summary["unmatched_ms"]) / summary["run_ms"]
    summary["traced_steps"] = PLAIN_TRACED_STEPS
    return summary


def _kernel_category(window: Window, kernel: str) -> str:
    return window.absorbed if window.absorbed and kernel in ADD_KERNELS else window.category
