"""ONNX variants edgeprof makes with ONNX Runtime's quantizers: their names and how their weights are stored.

The table sits here, below the exporter, so planning, the CLI and the backend registry read it without
importing the exporter (torch, optimum) and the exporter reads it like everyone else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgeprof.errors import QuantError
from edgeprof.quant.table import QuantTable


@dataclass(frozen=True)
class OnnxQuant:
    """An ONNX variant: how its weights are stored."""

    name: str
    description: str
    block_size: int = 0  # MatMulNBits block size (int4 only)
    algorithm: str = "rtn"  # int4: rtn (round to nearest), gptq (calibrated on text), hqq (half-quadratic, no data)


_INT4_NAME = re.compile(r"^int4(?:-(rtn|gptq|hqq))?(?:-b(\d+))?$")
_INT4_ALGORITHMS = {
    "rtn": "round to nearest, symmetric",
    "gptq": "GPTQ over the calibration text (second-order error feedback), asymmetric",
    "hqq": "HQQ (half-quadratic zero-point and scale fit, no data), asymmetric",
}
ONNX_QUANTS = {
    "fp32": OnnxQuant("fp32", "float32 weights (optimum export)"),
    "fp16": OnnxQuant("fp16", "float16 weights and activations (onnxruntime.transformers.float16)"),
    "int8": OnnxQuant("int8", "dynamic quantization: int8 weights, activations quantized per call"),
    "int4": OnnxQuant("int4", "4-bit weight-only MatMulNBits, symmetric, block 32, int8 compute", 32),
}
# Names users may carry over from GGUF for the same storage.
ONNX_ALIASES = {"f32": "fp32", "f16": "fp16"}


def onnx_quant(name: str) -> OnnxQuant:
    """Look up an ONNX variant (`int4-b64` picks a block size) or raise a `QuantError`."""
    key = ONNX_ALIASES.get(name.lower(), name.lower())
    if key in ONNX_QUANTS:
        return ONNX_QUANTS[key]
    match = _INT4_NAME.match(key)
    if match:
        algorithm = match.group(1) or "rtn"
        block = int(match.group(2) or 32)
        if block < 16 or block & (block - 1):
            raise QuantError(f"{name}: MatMulNBits block size must be a power of two >= 16")
        if algorithm == "rtn" and match.group(1):  # int4-rtn-b64 is int4-b64: one name, one cache entry
            key = "int4" + (f"-b{block}" if match.group(2) else "")
        return OnnxQuant(key, f"4-bit weight-only MatMulNBits, {_INT4_ALGORITHMS[algorithm]}, block {block}",
                         block, algorithm)
    raise QuantError(f"unknown ONNX quantization {name!r} (offered: fp32, fp16, int8, int4, int4-b<block>, "
                     "int4-gptq, int4-hqq and their -b<block>)")


ONNX_TABLE = QuantTable("onnx", onnx_quant, ("fp32", "int4"))
"""The ONNX format's quantizations as the ONNX Runtime backend registers them (`edgeprof export --to onnx`
makes fp32 and int4 when none is named)."""
