"""Effective-cost fits (edgeprof.analysis.fit): known costs come back, predictions are the fitted sum,
the GPU's regimes (mat-vec vs tiled kernels, host sampling, micro-batches) show where they should."""

import math

import pytest

from edgeprof.analysis.fit import (TERMS, Shape, fit_costs, fitted_ceilings, op_terms, predicted_times,
                                   shape_terms)
from edgeprof.analysis.roofline import Ceilings, phase_ops, predict
from edgeprof.analysis.calibration import GPU_PLAN
from edgeprof.models.presets import get_preset
from edgeprof.quant import GGUF_QUANTS

Q4 = GGUF_QUANTS["q4_k_m"]
GPU_COSTS = {
    "decode": {"kernels": 2.5e-6, "tiled_kernels": 6e-6, "weight_bytes": 1 / 2.0e12, "weight_flops": 1 / 20e12,
               "tiled_flops": 1 / 90e12, "attention_flops": 1 / 1.5e12, "logit_bytes": 1 / 7e9},
    "prefill": {"kernels": 19e-6, "weight_flops": 1 / 120e12, "attention_flops": 1 / 30e12, "logit_bytes": 1 / 7e9},
}
SHAPES = GPU_PLAN.shapes
# Unbounded base roofs: norms and the embedding then cost only their kernels, so a prediction is the fit's sum.
UNBOUNDED = Ceilings(math.inf, math.inf, 0.0, "test")


def _synthetic_samples(presets=("smollm2-135m", "llama-3.2-1b")):
    samples = {"decode": [], "prefill": []}
    for preset in presets:
        arch = get_preset(preset).architecture
        for shape in SHAPES:
            terms = shape_terms(arch, Q4, shape, matvec_max_batch=8)
            for phase in samples:
                seconds = sum(cost * terms[phase][name] for name, cost in GPU_COSTS[phase].items())
                samples[phase].append((terms[phase], seconds))
    return samples


def test_the_gpu_fit_recovers_known_costs_from_two_presets():
    samples = _synthetic_samples()
    for phase in ("decode", "prefill"):
        fitted = fit_costs(samples[phase], TERMS["gpu"][phase])
        assert fitted == pytest.approx(GPU_COSTS[phase], rel=1e-6)


def test_a_term_the_runs_do_not_vary_gets_no_cost_and_a_negative_one_is_dropped():
    samples = [({"a": 1.0, "b": 0.0}, 2.0), ({"a": 2.0, "b": 0.0}, 4.0)]
    assert fit_costs(samples, ("a", "b")) == {"a": pytest.approx(2.0), "b": 0.0}
    # the second quantity grew and the time fell: noise, not a negative cost
    noisy = [({"a": 1.0, "b": 1.0}, 1.0), ({"a": 1.0, "b": 3.0}, 0.9), ({"a": 2.0, "b": 1.0}, 2.0)]
    fitted = fit_costs(noisy, ("a", "b"))
    assert fitted["b"] == 0.0 and fitted["a"] > 0


def test_a_prediction_from_fitted_ceilings_is_the_fitted_sum():
    fit = {**GPU_COSTS, "matvec_max_batch": 8}
    ceilings = fitted_ceilings(fit, UNBOUNDED, "fit")
    arch = get_preset("llama-3.2-3b").architecture  # not a preset the costs came from
    for shape in (Shape(1, 128, 32), Shape(8, 128, 32), Shape(16, 512, 32, "none"), Shape(2, 2048, 32)):
        terms = shape_terms(arch, Q4, shape, matvec_max_batch=8)
        ttft, step = predicted_times(arch, Q4, ceilings, shape)
        expected = {phase: sum(cost * terms[phase][name] for name, cost in GPU_COSTS[phase].items())
                    for phase in terms}
        assert ttft == pytest.approx(expected["prefill"], rel=1e-9)
        assert step == pytest.approx(expected["decode"], rel=1e-9)


def test_decode_above_the_matvec_limit_pays_the_tiled_kernel_cost():
    same_rate = {**GPU_COSTS["decode"], "tiled_flops": GPU_COSTS["decode"]["weight_flops"]}
    ceilings = fitted_ceilings({**GPU_COSTS, "decode": same_rate, "matvec_max_batch": 8}, UNBOUNDED, "fit")
    arch = get_preset("smollm2-135m").architecture
    eight, nine = (predict(arch, Q4, ceilings, b, 128, 32, sampler="none").decode_step_s for b in (8, 9))
    matmul_kernels = 7 * arch.num_layers + 1  # q, k, v, o, gate, up, down per layer, and the head
    per_sequence = (nine - eight) - matmul_kernels * GPU_COSTS["decode"]["tiled_kernels"]
    assert 0 < per_sequence < 0.1 * (nine - eight)  # the jump is the kernels, not the ninth sequence's work


def test_greedy_sampling_reads_each_sequences_logits_and_passes_relaunch_kernels():
    arch = get_preset("tiny").architecture
    ops = {op.name: op for op in phase_ops(arch, GGUF_QUANTS["f32"], 3, 1, 10, greedy=True)}
    assert ops["sampling"].bytes == 3 * arch.vocab_size * 4 and ops["sampling"].kernels == 0
    assert "sampling" not in {op.name for op in phase_ops(arch, GGUF_QUANTS["f32"], 3, 1, 10)}
    one = op_terms(phase_ops(arch, GGUF_QUANTS["f32"], 1, 512, 512), 512, 0)
    four = op_terms(phase_ops(arch, GGUF_QUANTS["f32"], 1, 2048, 2048, calls=4), 512, 0)
    assert four["kernels"] == 4 * (one["kernels"] - 1) + 1  # the head only in the pass that ends the sequence
    assert four["weight_flops"] == pytest.approx(4 * one["weight_flops"], rel=0.05)
    assert predict(arch, GGUF_QUANTS["f32"], UNBOUNDED, 1, 2048, 8).prompt == 2048


def test_llama_fit_runs_real_llama_cpp_on_the_tiny_preset():
    from edgeprof.analysis.calibration import CalibrationPlan, llama_effective_rates

    plan = CalibrationPlan("cpu", ("tiny",), (Shape(1, 64, 32), Shape(1, 256, 32), Shape(4, 64, 32)))
    rates = llama_effective_rates(threads=2, quants=("q4_0",), plan=plan, repetitions=1)
    fitted = rates["q4_0"]
    assert set(fitted["decode"]) == set(TERMS["cpu"]["decode"]) and fitted["matvec_max_batch"] == 0
    assert sum(fitted["decode"].values()) > 0 and sum(fitted["prefill"].values()) > 0
    assert set(fitted["measured"]) == {"tiny_b1_p64_greedy", "tiny_b1_p256_greedy", "tiny_b4_p64_greedy"}
    for figures in fitted["measured"].values():  # three runs, three costs: the fit passes through them
        assert figures["decode_tps_fit"] > 0 and figures["ttft_ms_fit"] > 0
