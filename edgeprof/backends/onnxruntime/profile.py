"""Operator time by category ("footsteps of operations") from ONNX Runtime's own profiler.

Profiling adds per-node overhead, so it runs in a separate session after the measured repetitions and
never touches their figures. The pass is prefill + N decode steps, twice; only the second round is used
(the first warms caches and allocators). Each `model_run` event of the trace bounds one call, so node
events are assigned to prefill or to a decode step by time, then summed by the same categories the
roofline predictor uses (plus "other": mask building, shape arithmetic, casts). Node names come from the
optimum export (`/model/layers.3/self_attn/q_proj/MatMul`) and survive ORT's fusions as prefixes.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from edgeprof.backends.op_profile import ORT_METHOD, OpProfile, PhaseOps
from edgeprof.config import Hyperparameters

# First match wins; patterns are applied to the lower-cased node name.
_CATEGORY_RULES = (
    ("lm_head", re.compile(r"lm_head")),
    ("embedding", re.compile(r"embed_tokens")),
    ("norms", re.compile(r"layernorm|/norm/")),
    ("projections", re.compile(r"[qkvo]_proj")),
    ("ffn", re.compile(r"/mlp/|gate_proj|up_proj|down_proj|act_fn")),
    ("attention", re.compile(r"self_attn/|rotary_emb")),
)
OP_CATEGORIES = tuple(name for name, _ in _CATEGORY_RULES) + ("other",)
MAX_PROFILED_STEPS = 16


def categorize(node_name: str) -> str:
    lowered = node_name.lower()
    for category, pattern in _CATEGORY_RULES:
        if pattern.search(lowered):
            return category
    return "other"


def summarize_trace(events: list[dict], steps: int) -> OpProfile:
    """Per-category milliseconds for the second round's prefill and mean decode step, and shares."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    expected = 2 * (1 + steps)
    if len(runs) < expected:
        raise ValueError(f"profile has {len(runs)} model runs, expected {expected}")
    second = runs[1 + steps:expected]
    windows = {"prefill": [second[0]], "decode": second[1:]}
    nodes = [(e["ts"], e["dur"], e["name"].removesuffix("_kernel_time")) for e in events
             if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    starts = np.array([n[0] for n in nodes])
    summary = {}
    for phase, spans in windows.items():
        totals = dict.fromkeys(OP_CATEGORIES, 0.0)
        for t0, t1 in spans:
            for index in np.nonzero((starts >= t0) & (starts <= t1))[0]:
                _, dur, name = nodes[index]
                totals[categorize(name)] += dur / 1e3
        per_call = {k: v / len(spans) for k, v in totals.items()}
        node_ms = sum(per_call.values())
        run_ms = sum(t1 - t0 for t0, t1 in spans) / len(spans) / 1e3
        # run_ms - node_ms is ORT's own per-call work outside kernels
        summary[phase] = PhaseOps(per_call, {k: v / node_ms if node_ms else 0.0 for k, v in per_call.items()},
                                  node_ms, run_ms)
    return OpProfile("onnxruntime", ORT_METHOD, summary["prefill"], summary["decode"], steps)


def profile_ops(model_path: str, hp: Hyperparameters, prompts: np.ndarray) -> OpProfile:
    """Run the profiled pass and return `summarize_trace`'s breakdown."""
    from edgeprof.backends.onnxruntime.session import OnnxRuntimeSession

    steps = max(1, min(hp.gen_tokens, MAX_PROFILED_STEPS))
    with tempfile.TemporaryDirectory(prefix="edgeprof-ortprof-") as folder:
        session = OnnxRuntimeSession(model_path, hp, profile_prefix=os.path.join(folder, "ort"))
        try:
            for _ in range(2):
                session.reset()
                session.prefill(prompts)
                for _ in range(steps):
                    session.decode_step()
            trace = Path(session.session.end_profiling())
            events = json.loads(trace.read_text())
        finally:
            session.close()
    return summarize_trace(events, steps)
