"""GPTQ for ONNX Runtime's int4 (MatMulNBits) export, replacing the one ORT vendors from Intel Neural Compressor.

ORT's `GPTQWeightOnlyQuantConfig` runs `onnxruntime.quantization.neural_compressor.weight_only.gptq`, which
collects each MatMul's Hessian correctly but then does no error feedback: its weights are laid out
[in, out] (ONNX MatMul's B) and the inverse Hessian's Cholesky factor is upper triangular, yet it reads the
factor's *columns* below the diagonal (`Hinv1[i:, i]`, `Hinv[i2:, i1:i2]`), which are zero. Every later row
is left as it was, so its result is round-to-nearest with per-group ranges (measured: 99.98 % of weights
equal to RTN's on a trained down-projection with correlated inputs; tests/test_onnx_gptq.py). Its 4-bit
packing then re-derives each group's range from the fake-quantized values; with the symmetric scheme the
grid [-8, 7]·s comes back as ±7.5·s', 7 % off, and almost every weight is rounded a second time.

`gptq` below is Frantar et al.'s algorithm (GPTQ, ICLR 2023, Algorithm 1 with lazy batch updates) in that
layout, with each group's range taken from its rows as error feedback left them. `inc_gptq_replaced()`
puts it in place of the vendored function for the duration of one export; the export uses the asymmetric
scheme, whose repacking reproduces a group's grid whenever its values reach both ends of the range.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np


def group_grid(rows: np.ndarray, maxq: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per output column, the scale and zero point of a group of rows [group, out]: the range of the
    values and 0 (as RTN's), symmetric around 0 or not."""
    low = np.minimum(rows.min(axis=0), 0.0)
    high = np.maximum(rows.max(axis=0), 0.0)
    if symmetric:
        high = np.maximum(-low, high)
        low = -high
    empty = (low == 0) & (high == 0)
    low[empty], high[empty] = -1.0, 1.0
    scale = (high - low) / maxq
    zero = np.full_like(scale, (maxq + 1) / 2) if symmetric else np.round(-low / scale)
    return scale, zero


def gptq(W, H, num_bits: int = 4, group_size: int = 32, scheme: str = "asym", blocksize: int = 128,
         percdamp: float = 0.01, actorder: bool = False, mse: bool = False, perchannel: bool = True) -> np.ndarray:
    """The fake-quantized weight of an ONNX MatMul weight `W` [in, out] whose inputs' Hessian is `H` [in, in]
    (2/n Σ x xᵀ), on the grid of `num_bits` per group of `group_size` input rows. Same signature as the
    vendored function (`mse` and `perchannel`, grid-search options of it, are accepted and not used).

    Rows are quantized in order; each one's error, divided by its diagonal entry of U (the upper Cholesky
    factor of H⁻¹), is fed back into the rows after it along U's row, so the output error X·(Q − W) is
    what the remaining rows absorb; blocks of `blocksize` rows defer the update of the rows past the block."""
    W = np.array(W, dtype=np.float64)
    H = np.array(H, dtype=np.float64)
    rows = W.shape[0]
    maxq = 2**num_bits - 1
    group_size = rows if group_size == -1 else group_size
    blocksize = max(group_size, blocksize - blocksize % group_size)  # a group never spans two blocks
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[dead, :] = 0.0  # an input that is always 0 contributes nothing
    order = np.argsort(np.diag(H))[::-1] if actorder else np.arange(rows)
    W, H = W[order], H[order][:, order]
    H[np.arange(rows), np.arange(rows)] += percdamp * np.mean(np.diag(H))
    U = np.linalg.cholesky(np.linalg.inv(H)).T  # upper triangular
    Q = np.zeros_like(W)
    symmetric = scheme == "sym"
    for start in range(0, rows, blocksize):
        stop = min(start + blocksize, rows)
        block = W[start:stop].copy()
        errors = np.zeros_like(block)
        for i in range(stop - start):
            if i % group_size == 0:
                scale, zero = group_grid(block[i:i + group_size], maxq, symmetric)
            w = block[i]
            q = scale * (np.clip(np.round(w / scale) + zero, 0, maxq) - zero)
            Q[start + i] = q
            error = (w - q) / U[start + i, start + i]
            block[i:] -= np.outer(U[start + i, start + i:stop], error)
            errors[i] = error
        W[stop:] -= U[start:stop, stop:].T @ errors
    return Q[np.argsort(order)]


@contextlib.contextmanager
def inc_gptq_replaced() -> Iterator[None]:
    """This module's `gptq` in place of the one ORT's GPTQ quantizer calls, for the duration of the block."""
    from onnxruntime.quantization.neural_compressor import weight_only

    vendored = weight_only.gptq
    weight_only.gptq = gptq
    try:
        yield
    finally:
        weight_only.gptq = vendored
