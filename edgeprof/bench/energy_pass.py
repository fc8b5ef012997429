"""Hold prefill and decode at steady state long enough for the power sensors to resolve them.

A timed repetition is as long as its workload: 64 decode steps of a 1B model on an H100 last 80 ms, while
NVML's power reading there averages over a second. Energy taken over such a window is mostly the ramp
(measured: 0.22 J/token against 0.43 J/token over 10 s of native decode). So after the timed repetitions
the worker repeats the same work back to back — after a settling stretch, for one window per repetition,
each at least as long as the sensors need — and the parent takes energy over those windows. The timed
figures are untouched: the pass runs after them.

- Decode: the prompt is prefilled once, then decode steps run back to back; every `gen_tokens` steps the
  KV cache is rewound to the end of the prompt, so the steps cover exactly the timed workload's positions
  and no prefill falls inside a decode window.
- Prefill: reset and prefill, back to back.
- A phase whose timed windows are already long enough (a long prefill on a CPU) takes no pass: its timed
  windows are used, and the record says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from edgeprof.bench.measure import fill_depth
from edgeprof.config import Hyperparameters

SETTLE_MIN_S = 0.5  # clocks ramp up after the gap between repetitions


@dataclass(frozen=True)
class EnergyPassPlan:
    """How long to hold each phase: `settle_s` of load first, then `windows` windows of `window_s` each."""

    window_s: float
    windows: int
    settle_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def plan_energy_pass(min_window_s: float, required_window_s: float, period_s: float,
                     repetitions: int) -> EnergyPassPlan | None:
    """A window per repetition, each at least `min_window_s` and what the sensors need; None when off."""
    if min_window_s <= 0 or repetitions <= 0:
        return None
    return EnergyPassPlan(window_s=max(min_window_s, required_window_s), windows=repetitions,
                          settle_s=max(SETTLE_MIN_S, period_s))


def hold(unit: Callable[[], None], tokens_per_unit: int, plan: EnergyPassPlan) -> list[list[float]]:
    """Run `unit` back to back: `settle_s` unmeasured, then each window until it is `window_s` long.
    Returns [t0, t1, tokens] per window, on the perf_counter clock the sampler uses."""
    clock = time.perf_counter
    start = clock()
    while clock() - start < plan.settle_s:
        unit()
    windows = []
    t0 = clock()
    for _ in range(plan.windows):
        units = 0
        while True:
            unit()
            units += 1
            t1 = clock()
            if t1 - t0 >= plan.window_s:
                break
        windows.append([t0, t1, units * tokens_per_unit])
        t0 = t1  # windows abut: the load never pauses between them
    return windows


def run_energy_pass(session, prompts: np.ndarray, hp: Hyperparameters, plan: EnergyPassPlan,
                    timed: list[dict[str, tuple[float, float]]], depth_tokens: np.ndarray | None = None) -> dict:
    """Windows per phase ({"prefill": {"windows": [...], "method": "..."}, "decode": {...}}). With a context
    depth, the prefill unit rewinds to the depth and prefills the prompt after it, and decode rewinds to
    the depth plus the prompt: the windows cover the timed positions only."""
    batch, prompt_len = prompts.shape
    depth = depth_tokens.shape[1] if depth_tokens is not None else 0
    out = {}
    timed_prefill = [w["prefill"] for w in timed]
    if timed_prefill and min(t1 - t0 for t0, t1 in timed_prefill) >= plan.window_s:
        out["prefill"] = {"windows": [[t0, t1, batch * prompt_len] for t0, t1 in timed_prefill],
                          "method": "the timed prefills (each already long enough)"}
    else:
        if depth:
            fill_depth(session, depth_tokens)

        def prefill_unit() -> None:
            if depth:
                session.rewind(depth)
                session.prefill(prompts, start=depth)
            else:
                session.reset()
                session.prefill(prompts)

        out["prefill"] = {"windows": hold(prefill_unit, batch * prompt_len, plan),
                          "method": f"steady pass: the {batch}x{prompt_len}-token prefill repeated back to back, "
                                    f"{plan.settle_s:g} s settling, then windows of >= {plan.window_s:g} s"}
    if hp.gen_tokens <= 0:
        return out
    timed_decode = [w["decode"] for w in timed]
    if timed_decode and min(t1 - t0 for t0, t1 in timed_decode) >= plan.window_s:
        out["decode"] = {"windows": [[t0, t1, batch * hp.gen_tokens] for t0, t1 in timed_decode],
                         "method": "the timed decodes (each already long enough)"}
        return out
    position = fill_depth(session, depth_tokens)
    session.prefill(prompts, start=position) if position else session.prefill(prompts)
    steps = 0

    def decode_unit() -> None:
        nonlocal steps
        if steps == hp.gen_tokens:
            session.rewind(depth + prompt_len)
            steps = 0
        session.decode_step()
        steps += 1

    out["decode"] = {"windows": hold(decode_unit, batch, plan),
                     "method": f"steady pass: {batch}-sequence decode steps back to back, rewound to position "
                               f"{depth + prompt_len} every {hp.gen_tokens} steps, {plan.settle_s:g} s settling, "
                               f"then windows of >= {plan.window_s:g} s"}
    return out
