"""GGUF quantization types: their names, their storage, and llama.cpp's per-tensor mix rules.

Storage figures are the ggml block layouts (block size in weights, bytes per block) from
ggml-common.h, so weight bytes derived here match real GGUF files closely.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeprof.errors import QuantError
from edgeprof.quant.table import QuantTable

# ggml type -> (weights per block, bytes per block)
GGML_BLOCKS: dict[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
    "q8_0": (32, 34),
    "q2_k": (256, 84),
    "q3_k": (256, 110),
    "q4_k": (256, 144),
    "q5_k": (256, 176),
    "q6_k": (256, 210),
    "iq4_nl": (32, 18),
    "iq1_s": (256, 50),
    "iq1_m": (256, 56),
    "iq2_xxs": (256, 66),
    "iq2_xs": (256, 74),
    "iq2_s": (256, 82),
    "iq3_xxs": (256, 98),
    "iq3_s": (256, 110),
    "iq4_xs": (256, 136),
    "tq1_0": (256, 54),
    "tq2_0": (256, 66),
}


def bits_per_weight(ggml_type: str) -> float:
    """Storage bits per weight of a ggml type, scales included."""
    block, nbytes = GGML_BLOCKS[ggml_type]
    return nbytes * 8 / block


@dataclass(frozen=True)
class GgufQuant:
    """One llama.cpp file type (`llama_ftype`): its user-facing name and main tensor type."""

    name: str
    ftype_constant: str  # attribute of llama_cpp, e.g. LLAMA_FTYPE_MOSTLY_Q4_K_M
    base_type: str  # ggml type of most 2D weights
    mix: str = ""  # "m"/"s"/"l": llama.cpp raises some tensors to a bigger type
    imatrix: bool = False  # quantized with an importance matrix from calibration text
    imatrix_required: bool = False  # llama.cpp refuses (or writes garbage) without one: the IQ1/IQ2/IQ3 types

    @property
    def needs_quantizer(self) -> bool:
        """f32/f16/bf16 are written directly; everything else goes through llama_model_quantize."""
        return self.name not in ("f32", "f16")


def _q(name: str, constant: str, base: str, mix: str = "") -> GgufQuant:
    return GgufQuant(name, constant, base, mix)


IMATRIX_SUFFIX = "-imat"  # q4_k_m-imat: the same file type, quantized with an importance matrix


def _calibrated(quant: GgufQuant) -> GgufQuant:
    return GgufQuant(quant.name + IMATRIX_SUFFIX, quant.ftype_constant, quant.base_type, quant.mix, imatrix=True)


def _iq(name: str, constant: str, base: str) -> GgufQuant:
    return GgufQuant(name, constant, base, imatrix=True, imatrix_required=True)


# The types llama.cpp's quantizer offers without an importance matrix.
GGUF_PLAIN_QUANTS: dict[str, GgufQuant] = {
    q.name: q
    for q in [
        _q("f32", "LLAMA_FTYPE_ALL_F32", "f32"),
        _q("f16", "LLAMA_FTYPE_MOSTLY_F16", "f16"),
        _q("bf16", "LLAMA_FTYPE_MOSTLY_BF16", "bf16"),
        _q("q8_0", "LLAMA_FTYPE_MOSTLY_Q8_0", "q8_0"),
        _q("q6_k", "LLAMA_FTYPE_MOSTLY_Q6_K", "q6_k"),
        _q("q5_k_m", "LLAMA_FTYPE_MOSTLY_Q5_K_M", "q5_k", "m"),
        _q("q5_k_s", "LLAMA_FTYPE_MOSTLY_Q5_K_S", "q5_k", "s"),
        _q("q5_1", "LLAMA_FTYPE_MOSTLY_Q5_1", "q5_1"),
        _q("q5_0", "LLAMA_FTYPE_MOSTLY_Q5_0", "q5_0"),
        _q("q4_k_m", "LLAMA_FTYPE_MOSTLY_Q4_K_M", "q4_k", "m"),
        _q("q4_k_s", "LLAMA_FTYPE_MOSTLY_Q4_K_S", "q4_k", "s"),
        _q("q4_1", "LLAMA_FTYPE_MOSTLY_Q4_1", "q4_1"),
        _q("q4_0", "LLAMA_FTYPE_MOSTLY_Q4_0", "q4_0"),
        _q("iq4_nl", "LLAMA_FTYPE_MOSTLY_IQ4_NL", "iq4_nl"),
        _q("iq4_xs", "LLAMA_FTYPE_MOSTLY_IQ4_XS", "iq4_xs"),
        _q("q3_k_l", "LLAMA_FTYPE_MOSTLY_Q3_K_L", "q3_k", "l"),
        _q("q3_k_m", "LLAMA_FTYPE_MOSTLY_Q3_K_M", "q3_k", "m"),
        _q("q3_k_s", "LLAMA_FTYPE_MOSTLY_Q3_K_S", "q3_k", "s"),
        _q("q2_k", "LLAMA_FTYPE_MOSTLY_Q2_K", "q2_k"),
        _q("tq2_0", "LLAMA_FTYPE_MOSTLY_TQ2_0", "tq2_0"),
        _q("tq1_0", "LLAMA_FTYPE_MOSTLY_TQ1_0", "tq1_0"),
    ]
}

# The importance-matrix types (llama-quantize's IQ1_S … IQ3_S), which need calibration text: the type's
# name is its ggml base type and, upper-cased, its llama_ftype.
IQ_QUANTS: dict[str, GgufQuant] = {
    name: _iq(name, f"LLAMA_FTYPE_MOSTLY_{name.upper()}", name)
    for name in ("iq3_s", "iq3_xxs", "iq2_s", "iq2_xs", "iq2_xxs", "iq1_m", "iq1_s")
}

# Every GGUF quantization by name: the plain ones, each k-/legacy type again with an importance matrix
# (`-imat`), and the IQ types.
GGUF_QUANTS: dict[str, GgufQuant] = {
    **GGUF_PLAIN_QUANTS,
    **{q.name + IMATRIX_SUFFIX: _calibrated(q) for q in GGUF_PLAIN_QUANTS.values()
       if q.needs_quantizer and q.base_type.startswith(("q", "iq4"))},
    **IQ_QUANTS,
}



def gguf_quant(name: str) -> GgufQuant:
    """Look up a GGUF quantization by name or raise a `QuantError` listing the valid ones."""
    quant = GGUF_QUANTS.get(name.lower())
    if quant is None:
        raise QuantError(f"unknown GGUF quantization {name!r} (offered: {', '.join(GGUF_QUANTS)})")
    return quant


GGUF_TABLE = QuantTable("gguf", gguf_quant, ("q4_k_m",))
"""The GGUF format's quantizations as the llama.cpp backend registers them (`edgeprof export --to gguf`
makes q4_k_m when none is named)."""

KV_CACHE_TYPES: dict[str, int] = {"f32": 0, "f16": 1, "bf16": 30, "q8_0": 8, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7}
"""KV-cache element types llama.cpp accepts, by name -> ggml_type id."""


def kv_bytes_per_element(kv_type: str) -> float:
    """Storage of one KV-cache element of `kv_type`, block scales included (f16 = 2.0, q8_0 = 34/32)."""
    block, nbytes = GGML_BLOCKS[kv_type]
    return nbytes / block


# llama-quant.cpp's choices for the output and embedding tensors of the IQ file types (its rules for
# attn_v/ffn_down by GQA ratio and expert count are not modelled: most tensors keep the base type).
_IQ_EDGE_TYPES = {
    **{(base, "output"): "q5_k" for base in ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs")},
    **{(base, "embed"): "q2_k" for base in ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs")},
    ("iq2_s", "embed"): "iq3_s",
}


def _uses_more_bits(layer: int, n_layers: int) -> bool:
    # llama.cpp's use_more_bits(): the first and last eighth, and every third layer between.
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def gguf_tensor_type(quant: GgufQuant, role: str, layer: int, n_layers: int, n_cols: int) -> str:
    """The ggml type llama.cpp's quantizer gives one 2D tensor, simplified from llama-quant.cpp.

    `role` is "output" (lm_head, or the tied embedding acting as it), "embed", "attn_v", "ffn_down",
    "attn_qkv" (a fused projection, which the _m mixes give one step more) or another projection. Rows
    whose length is not a multiple of the block fall back to a legacy type, as llama.cpp does. (llama.cpp's
    rules for models of exactly 8 experts, Mixtral's, are not modelled.)
    """
    base = quant.base_type
    if not quant.needs_quantizer:
        return base
    if quant.imatrix_required and role in ("output", "embed"):
        chosen = _IQ_EDGE_TYPES.get((base, role), "q6_k" if role == "output" else base)
    elif role == "output" and base not in ("q8_0", "bf16"):
        chosen = "q6_k"
    elif quant.mix == "m" and role in ("attn_v", "ffn_down") and _uses_more_bits(layer, n_layers):
        chosen = "q6_k" if base in ("q4_k", "q5_k") else "q5_k" if base == "q3_k" else base
    elif quant.mix == "l" and role in ("attn_v", "ffn_down"):
        chosen = "q5_k"
    elif role == "attn_qkv" and quant.mix in ("m", "l"):
        chosen = {"q3_k": "q4_k", "q4_k": "q5_k", "q5_k": "q6_k"}.get(base, base) if quant.mix == "m" or base == "q3_k" \
            else base
    else:
        chosen = base
    block = GGML_BLOCKS[chosen][0]
    if n_cols % block:
        chosen = "q8_0" if n_cols % 32 == 0 and chosen in ("q6_k", "q8_0") else "q5_0" if n_cols % 32 == 0 else "f16"
    return chosen
