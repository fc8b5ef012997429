"""HF checkpoint -> GGUF (f32 or f16), written tensor by tensor.

Layout follows llama.cpp's own converter: GGUF tensor names, the q/k row permutation that turns HF's
half-split rotary layout back into llama.cpp's interleaved pairs (Llama/Mistral; Qwen2 and Qwen3 use NeoX
rotary and are left alone), Llama-3 rope-frequency factors, and f32 for every 1-D tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

from edgeprof.architecture import Architecture, TensorSpec
from edgeprof.export.gguf_vocab import read_vocabulary, write_vocabulary
from edgeprof.errors import ArtifactError
from edgeprof.safetensors_io import SafetensorsCheckpoint

_GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "smollm3": "smollm3"}
_INTERLEAVED_ROTARY = ("llama", "mistral", "smollm3")  # llama.cpp's "norm" rope type: q/k rows permuted
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}


def gguf_name(hf_name: str) -> str:
    """The llama.cpp tensor name of an HF tensor name."""
    if hf_name in _TOP_NAMES:
        return _TOP_NAMES[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)  # model.layers.N.rest
    return f"blk.{layer}.{_LAYER_NAMES[rest]}"


def permute_rotary(weights: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half layout to llama.cpp's interleaved rotary pairs."""
    rows = weights.shape[0]
    return (weights.reshape(n_heads, 2, rows // n_heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def llama3_rope_factors(arch: Architecture) -> np.ndarray | None:
    """Per-frequency divisors for Llama-3 rope scaling (None when the model does not use it)."""
    scaling = arch.rope_scaling or {}
    if str(scaling.get("rope_type", scaling.get("type", ""))).lower() != "llama3":
        return None
    factor = float(scaling["factor"])
    low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
    old_context = float(scaling.get("original_max_position_embeddings", 8192))
    freqs = 1.0 / arch.rope_theta ** (np.arange(0, arch.head_dim, 2, dtype=np.float64) / arch.head_dim)
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            factors.append(1.0)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


def _prepare(arch: Architecture, spec: TensorSpec, data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if arch.model_type in _INTERLEAVED_ROTARY:
        if spec.role == "q":
            data = permute_rotary(data, arch.num_heads)
        elif spec.role == "k":
            data = permute_rotary(data, arch.num_kv_heads)
    target = np.float32 if data.ndim == 1 else dtype
    return np.ascontiguousarray(data, dtype=target)


def convert_hf_to_gguf(folder: Path, arch: Architecture, out_path: Path, dtype_name: str, model_name: str,
                       on_tensor: Callable[[int, int], None] | None = None) -> None:
    """Write `out_path` as a GGUF of `dtype_name` ("f32" or "f16"); `on_tensor(done, total)` reports progress."""
    dtype = np.dtype(np.float32 if dtype_name == "f32" else np.float16)
    if arch.model_type == "smollm3" and arch.rope_layers != tuple((n + 1) % 4 != 0 for n in range(arch.num_layers)):
        raise ArtifactError(f"{folder}: llama.cpp runs SmolLM3 with every 4th layer without RoPE; this checkpoint's "
                            "no_rope_layers differ, so its GGUF would compute another model")
    checkpoint = SafetensorsCheckpoint(folder)
    vocab = read_vocabulary(folder, arch)
    gguf_arch = _GGUF_ARCH[arch.model_type]
    writer = gguf.GGUFWriter(out_path, gguf_arch)
    writer.add_name(model_name)
    writer.add_context_length(arch.max_position_embeddings)
    writer.add_embedding_length(arch.hidden_size)
    writer.add_block_count(arch.num_layers)
    writer.add_feed_forward_length(arch.intermediate_size)
    writer.add_head_count(arch.num_heads)
    writer.add_head_count_kv(arch.num_kv_heads)
    writer.add_rope_freq_base(arch.rope_theta)
    writer.add_rope_dimension_count(arch.head_dim)
    writer.add_key_length(arch.head_dim)
    writer.add_value_length(arch.head_dim)
    writer.add_layer_norm_rms_eps(arch.rms_norm_eps)
    writer.add_vocab_size(len(vocab.tokens))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype_name == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    write_vocabulary(writer, vocab, arch)

    specs = arch.tensors()
    for spec in specs:
        if spec.name not in checkpoint:
            raise ArtifactError(f"{folder}: checkpoint lacks tensor {spec.name}")
        target = np.float32 if len(spec.shape) == 1 else dtype
        writer.add_tensor_info(gguf_name(spec.name), spec.shape, np.dtype(target),
                               spec.numel * np.dtype(target).itemsize)
    rope_factors = llama3_rope_factors(arch)
    if rope_factors is not None:
        writer.add_tensor_info("rope_freqs.weight", rope_factors.shape, rope_factors.dtype, rope_factors.nbytes)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    total = len(specs)
    for done, spec in enumerate(specs, 1):
        writer.write_tensor_data(_prepare(arch, spec, checkpoint.read(spec.name), dtype))
        if on_tensor:
            on_tensor(done, total)
    if rope_factors is not None:
        writer.write_tensor_data(rope_factors)
    writer.close()
