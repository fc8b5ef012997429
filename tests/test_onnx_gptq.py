"""edgeprof's GPTQ for the ONNX int4 export, and why it replaces the one onnxruntime vendors."""

from __future__ import annotations

import numpy as np
import pytest

from edgeprof.export.onnx_gptq import gptq, group_grid, inc_gptq_replaced

IN, OUT, SAMPLES, GROUP = 256, 96, 2048, 32


@pytest.fixture(scope="module")
def layer():
    """A weight [in, out] with a few large rows, and correlated inputs (as a transformer's are): GPTQ's
    error feedback only has something to exploit where the Hessian has off-diagonal mass."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((IN, OUT)) * 0.05
    weight[rng.choice(IN, 8, replace=False)] *= 6
    mixing = np.eye(IN) + 1.2 * rng.standard_normal((IN, IN)) / np.sqrt(IN)
    inputs = rng.standard_normal((SAMPLES, IN)) @ mixing
    hessian = 2 / SAMPLES * inputs.T @ inputs
    return weight, inputs, hessian


def _rtn(weight: np.ndarray, symmetric: bool) -> np.ndarray:
    """Round to nearest on the same per-group grid GPTQ uses (the baseline GPTQ must beat)."""
    out = np.empty_like(weight)
    for start in range(0, weight.shape[0], GROUP):
        rows = weight[start:start + GROUP]
        scale, zero = group_grid(rows, 15, symmetric)
        out[start:start + GROUP] = scale * (np.clip(np.round(rows / scale) + zero, 0, 15) - zero)
    return out


def _output_error(inputs, weight, quantized) -> float:
    return float(np.linalg.norm(inputs @ (quantized - weight)) / np.linalg.norm(inputs @ weight))


@pytest.mark.parametrize("scheme", ["asym", "sym"])
def test_gptq_lowers_the_output_error_below_round_to_nearest(layer, scheme):
    weight, inputs, hessian = layer
    ours = _output_error(inputs, weight, gptq(weight, hessian, group_size=GROUP, scheme=scheme))
    rtn = _output_error(inputs, weight, _rtn(weight, scheme == "sym"))
    # Deterministic float64 numpy on a seeded layer, so the figures are the same on any CPU (BLAS rounding
    # moves them by ~1e-12). Measured: GPTQ 33 % below RTN on this layer (31 % on the trained model's down-projection);
    # 15 % leaves room and still fails an implementation that feeds no error back (0 %).
    assert ours < 0.85 * rtn, (ours, rtn)


def test_every_group_stays_on_a_4_bit_grid(layer):
    weight, _, hessian = layer
    quantized = gptq(weight, hessian, group_size=GROUP)
    for start in range(0, IN, GROUP):
        for column in range(OUT):
            assert len(np.unique(np.round(quantized[start:start + GROUP, column], 12))) <= 16


def test_the_input_is_left_alone_and_dead_inputs_quantize_to_zero(layer):
    weight, _, hessian = layer
    weight, hessian = weight.copy(), hessian.copy()
    hessian[5, :] = hessian[:, 5] = 0  # an input that is always zero
    before = (weight.copy(), hessian.copy())
    quantized = gptq(weight, hessian, group_size=GROUP, actorder=True)
    assert np.array_equal(weight, before[0]) and np.array_equal(hessian, before[1])
    assert np.all(quantized[5] == 0)


def test_the_vendored_gptq_feeds_no_error_back_so_edgeprof_replaces_it(layer):
    """The reason `inc_gptq_replaced` exists: onnxruntime's copy of Intel Neural Compressor's GPTQ reads the
    upper Cholesky factor's zero lower triangle, so its result is round to nearest. Should a later
    onnxruntime fix it, this fails and the replacement can go."""
    weight_only = pytest.importorskip("onnxruntime.quantization.neural_compressor.weight_only")
    weight, _, hessian = layer
    vendored = weight_only.gptq(weight.copy(), hessian.copy(), num_bits=4, group_size=GROUP, scheme="asym")
    assert np.mean(np.isclose(vendored, _rtn(weight, False))) > 0.99
    with inc_gptq_replaced():
        assert weight_only.gptq is gptq
    assert weight_only.gptq is not gptq
