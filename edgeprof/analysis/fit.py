"""Effective costs fitted from short real runs: the roofline's own quantities, each with a measured price.

Datasheet ceilings miss what dominates small models. On a small CPU, k-quant matrix-vector products are
bounded by dequantisation; on a server GPU, a 1B model's decode step is mostly kernel launches, the switch
from mat-vec to tiled matmul kernels above batch 8, and the host's argmax over 128k logits per sequence.
So `edgeprof calibrate` times a few real llama.cpp configurations and fits each phase's time as a sum of
terms the roofline already counts, each times a non-negative cost in seconds per unit:

    kernels          every kernel launched (all ops, every llama_decode pass)   -> s per kernel
    tiled_kernels    decode's weight-matmul kernels when the batch is above the mat-vec limit -> extra s each
    weight_bytes     bytes of the weight matmuls (weights and their activations) -> s/B (1 / streaming rate)
    weight_flops     FLOPs of the weight matmuls (mat-vec kernels in decode)     -> s/FLOP (1 / matmul rate)
    tiled_flops      decode's weight-matmul FLOPs above the mat-vec limit        -> s/FLOP (1 / tiled rate)
    attention_flops  FLOPs of rotary, scores, softmax and attention x V          -> s/FLOP
    logit_bytes      logits the host reads to sample greedily                    -> s/B

Which terms a fit uses depends on the device kind (`TERMS`): a CPU has no launch cost to speak of, and its
three runs fix three costs exactly. The fitted costs become `Ceilings` (`fitted_ceilings`), so a prediction
is the same sum, op by op, with shares and bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgeprof.analysis.roofline import WEIGHT_CATEGORIES, Ceilings, Op, predict, runs_tiled, workload_ops
from edgeprof.models.architecture import Architecture
from edgeprof.quant import GgufQuant

TERMS = {
    "cpu": {"decode": ("weight_bytes", "weight_flops", "attention_flops"),
            "prefill": ("weight_flops", "attention_flops")},
    "gpu": {"decode": ("kernels", "tiled_kernels", "weight_bytes", "weight_flops", "tiled_flops", "attention_flops",
                       "logit_bytes"),
            "prefill": ("kernels", "weight_flops", "attention_flops", "logit_bytes")},
}
# llama.cpp's CUDA backend uses mat-vec kernels up to this many columns (MMVQ_MAX_BATCH_SIZE in mmvq.cuh).
LLAMA_CUDA_MATVEC_MAX_BATCH = 8
UBATCH = 512  # Hyperparameters.n_ubatch: prefill's tokens per llama_decode pass


@dataclass(frozen=True)
class Shape:
    """One calibration run's workload."""

    batch: int
    prompt: int
    gen: int
    sampler: str = "greedy"

    @property
    def label(self) -> str:
        return f"b{self.batch}_p{self.prompt}_{self.sampler}"


def op_terms(ops: list[Op], tokens_per_call: int, matvec_max_batch: int) -> dict[str, float]:
    """The fit's quantities for one phase's ops (see the module docstring); norms and the embedding lookup
    count only through their kernels."""
    weights = [op for op in ops if op.category in WEIGHT_CATEGORIES]
    tiled = [runs_tiled(op, tokens_per_call, matvec_max_batch) for op in weights]
    return {
        "kernels": float(sum(op.kernels for op in ops)),
        "tiled_kernels": float(sum(op.kernels for op, t in zip(weights, tiled) if t)),
        "weight_bytes": sum(op.bytes for op in weights),
        "weight_flops": sum(op.flops for op, t in zip(weights, tiled) if not t),
        "tiled_flops": sum(op.flops for op, t in zip(weights, tiled) if t),
        "attention_flops": sum(op.flops for op in ops if op.category == "attention"),
        "logit_bytes": sum(op.bytes for op in ops if op.category == "sampling"),
    }


def shape_terms(arch: Architecture, quant: GgufQuant, shape: Shape, matvec_max_batch: int = 0,
                kv_bytes: float = 2.0) -> dict[str, dict[str, float]]:
    """Per phase, the fit's quantities for `shape`, from the ops `roofline.predict` times (prefill's tiled
    kernels are in its own per-kernel cost, so the mat-vec limit applies to decode only)."""
    phases = workload_ops(arch, quant, shape.batch, shape.prompt, shape.gen, kv_bytes, shape.sampler, UBATCH)
    return {phase: op_terms(ops, tokens_per_call, matvec_max_batch if phase == "decode" else 0)
            for phase, (ops, tokens_per_call) in phases.items()}


def fit_costs(samples: list[tuple[dict[str, float], float]], names: tuple[str, ...]) -> dict[str, float]:
    """Non-negative seconds per unit of each term in `names`, least squares relative to each run's time.

    Relative, because runs range from a millisecond to seconds and each should count alike. A term whose
    best cost comes out negative (noise, or a quantity the runs barely vary) is dropped and the rest refitted.
    """
    a = np.array([[terms[n] for n in names] for terms, _ in samples], dtype=np.float64)
    t = np.array([seconds for _, seconds in samples], dtype=np.float64)
    a, ones = a / t[:, None], np.ones(len(t))
    keep = [i for i in range(len(names)) if a[:, i].any()]
    while keep:
        solution = np.linalg.lstsq(a[:, keep], ones, rcond=None)[0]
        if (solution >= 0).all():
            break
        keep = [k for k, v in zip(keep, solution) if v > 0]
    costs = dict.fromkeys(names, 0.0)
    for index, value in zip(keep, solution if keep else []):
        costs[names[index]] = float(value)
    return costs


def _rate(cost: float) -> float:
    return 1.0 / cost if cost > 0 else float("inf")


def fitted_ceilings(fit: dict, base: Ceilings, source: str) -> Ceilings:
    """Ceilings whose rates and overheads are a fit's costs (`fit` holds "decode" and "prefill" cost maps and
    "matvec_max_batch"); norms and the embedding keep `base`'s roofs.

    In each phase the weight matmuls stream and compute one after the other (additive), exactly as fitted,
    so a prediction is the fit's own sum: a term a phase's fit leaves out costs nothing there.
    """
    decode, prefill = fit["decode"], fit["prefill"]
    by_category: dict[str, tuple] = {}
    for phase, costs in (("decode", decode), ("prefill", prefill)):
        streaming = _rate(costs.get("weight_bytes", 0.0))
        for category in WEIGHT_CATEGORIES:
            by_category[f"{phase}:{category}"] = (_rate(costs.get("weight_flops", 0.0)), streaming, True)
            if "tiled_flops" in costs:
                by_category[f"{phase}:tiled:{category}"] = (_rate(costs["tiled_flops"]), streaming, True)
        # attention's fit already includes reading the KV cache, so its byte rate is unbounded
        by_category[f"{phase}:attention"] = (_rate(costs.get("attention_flops", 0.0)), float("inf"))
        if "logit_bytes" in costs:  # else sampling keeps the base roofs (a CPU's fit absorbs its small cost)
            by_category[f"{phase}:sampling"] = (float("inf"), _rate(costs["logit_bytes"]))
    overheads = {"decode": decode.get("kernels", 0.0), "prefill": prefill.get("kernels", 0.0),
                 "decode:tiled": decode.get("tiled_kernels", 0.0)}
    return Ceilings(base.flops_per_s, base.bytes_per_s, base.kernel_overhead_s, source, by_category, overheads,
                    int(fit.get("matvec_max_batch", 0)))


def predicted_times(arch: Architecture, quant: GgufQuant, ceilings: Ceilings, shape: Shape) -> tuple[float, float]:
    """(TTFT s, decode step s) the fitted ceilings give for `shape` (used to report the fit's own residuals)."""
    p = predict(arch, quant, ceilings, shape.batch, shape.prompt, shape.gen, sampler=shape.sampler, ubatch=UBATCH)
    return p.ttft_s, p.decode_step_s


def _cost(rate: float | None, unit: float) -> float:
    """Seconds per unit from a stored rate; 0 (not fittable) for a rate an earlier edgeprof stored as infinite
    (JSON `Infinity`), zero or missing."""
    return 1.0 / (rate * unit) if rate and math.isfinite(rate) and rate > 0 else 0.0


def legacy_cpu_fit(old: dict) -> dict:
    """A fit stored by an earlier edgeprof (named rates for the CPU's three costs) in today's cost form."""
    return {"decode": {"weight_bytes": _cost(old["weight_gbps"], 1e9),
                       "weight_flops": _cost(old.get("decode_matmul_tflops", old["matmul_tflops"]), 1e12),
                       "attention_flops": _cost(old["decode_attention_tflops"], 1e12)},
            "prefill": {"weight_flops": _cost(old["matmul_tflops"], 1e12),
                        "attention_flops": _cost(old["prefill_attention_tflops"], 1e12)},
            "matvec_max_batch": 0}


# A cost the runs could not separate from the others (fit_costs dropped it at zero): its rate is not "inf".
UNFITTABLE = "not fittable from these runs (its time is inside the other terms)"


def describe(fit: dict) -> str:
    """One line of a fit's costs in the units people quote (us per kernel, GB/s, TFLOP/s)."""
    if "decode" not in fit:
        fit = legacy_cpu_fit(fit)
    parts = []
    for phase in ("decode", "prefill"):
        costs = fit[phase]
        items = []
        for name, value in costs.items():
            if name in ("kernels", "tiled_kernels"):
                items.append(f"{'tiled +' if name == 'tiled_kernels' else ''}{value * 1e6:.2g} us/kernel")
            elif name in ("weight_bytes", "logit_bytes"):
                label = "weights" if name == "weight_bytes" else "logits"
                items.append(f"{label} {_rate(value) / 1e9:.3g} GB/s" if value > 0 else f"{label}: {UNFITTABLE}")
            else:
                label = {"weight_flops": "matmul", "tiled_flops": "tiled matmul"}.get(name, "attention")
                items.append(f"{label} {_rate(value) / 1e12:.3g} TFLOP/s" if value > 0 else f"{label}: {UNFITTABLE}")
        parts.append(f"{phase}: " + ", ".join(items))
    return "; ".join(parts)
