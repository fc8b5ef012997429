"""HF checkpoint -> GGUF (f32 or f16), written tensor by tensor.

Layout follows llama.cpp's own converter: tensor names from the `gguf` package's table, the q/k row
permutation that turns HF's half-split rotary layout back into llama.cpp's interleaved pairs
(Llama/Mistral/SmolLM3; the other families use NeoX rotary and are left alone), routed experts stacked
per layer, Gemma's (1 + w) norm gains stored as such, Llama-3 and LongRoPE frequency factors, each
family's metadata (windows, soft-caps, experts), and f32 for every 1-D tensor and MoE router.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from edgeprof.models.architecture import Architecture, TensorSpec
from edgeprof.export.gguf_vocab import read_vocabulary, write_vocabulary
from edgeprof.errors import ArtifactError
from edgeprof.models.safetensors_io import SafetensorsCheckpoint

_GGUF_ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "smollm3": "smollm3",
              "gemma2": "gemma2", "gemma3_text": "gemma3", "phi3": "phi3", "qwen3_moe": "qwen3moe", "olmoe": "olmoe"}
_INTERLEAVED_ROTARY = ("llama", "mistral", "smollm3")  # llama.cpp's "norm" rope type: q/k rows permuted
_EXPERT_PART = re.compile(r"\.experts\.\d+\.")


def tensor_name_map(arch: Architecture) -> gguf.TensorNameMap:
    """The `gguf` package's HF -> llama.cpp name table for this family and depth (built once per export)."""
    arch_enum = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == _GGUF_ARCH[arch.model_type])
    return gguf.get_tensor_name_map(arch_enum, arch.num_layers)


def gguf_name(hf_name: str, arch: Architecture, name_map: gguf.TensorNameMap) -> str:
    """The llama.cpp tensor name of an HF tensor name (a routed expert's tensor names the stacked tensor of
    all experts of its layer)."""
    stacked = _EXPERT_PART.sub(".experts.", hf_name)
    found = name_map.get_name(stacked, try_suffixes=(".weight", ".bias"))
    if found is None:
        raise ArtifactError(f"no GGUF name for {hf_name} in llama.cpp's {_GGUF_ARCH[arch.model_type]} tensor table")
    return found


def permute_rotary(weights: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k rows from HF's rotate-half layout to llama.cpp's interleaved rotary pairs."""
    rows = weights.shape[0]
    return (weights.reshape(n_heads, 2, rows // n_heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def llama3_rope_factors(arch: Architecture) -> np.ndarray | None:
    """Per-frequency divisors for Llama-3 rope scaling (None when the model does not use it)."""
    if rope_scaling_type(arch) != "llama3":
        return None
    scaling = arch.rope_scaling
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


def _projection(spec: TensorSpec) -> str:
    """"q" or "k" for those projections' weights and biases (their rows are rotated), else the role."""
    if spec.role == "bias":
        return {"q_proj": "q", "k_proj": "k"}.get(spec.name.rsplit(".", 2)[-2], "bias")
    return spec.role


def _prepare(arch: Architecture, spec: TensorSpec, data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if arch.is_gemma and spec.role in ("norm", "qk_norm"):
        data = data.astype(np.float32) + 1.0  # llama.cpp's RMSNorm multiplies by w: store Gemma's (1 + w)
    if arch.model_type in _INTERLEAVED_ROTARY:  # a bias is one more column of its rows: permuted alike
        if _projection(spec) == "q":
            data = permute_rotary(data, arch.num_heads)
        elif _projection(spec) == "k":
            data = permute_rotary(data, arch.num_kv_heads)
    target = np.float32 if data.ndim == 1 or spec.role == "router" else dtype
    return np.ascontiguousarray(data, dtype=target)


@dataclass(frozen=True)
class _GgufTensor:
    """One tensor of the GGUF: a checkpoint tensor, or a routed-expert stack [experts, rows, cols]."""

    name: str
    parts: tuple[TensorSpec, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        first = self.parts[0].shape
        return (len(self.parts), *first) if self.parts[0].expert >= 0 else first

    def dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype(np.float32 if len(self.parts[0].shape) == 1 or self.parts[0].role == "router" else dtype)


def _gguf_tensors(arch: Architecture) -> list[_GgufTensor]:
    """The GGUF's tensors in checkpoint order, each layer's experts stacked where their first one stands."""
    name_map = tensor_name_map(arch)
    tensors: dict[str, list[TensorSpec]] = {}
    for spec in arch.tensors():
        tensors.setdefault(gguf_name(spec.name, arch, name_map), []).append(spec)
    return [_GgufTensor(name, tuple(parts)) for name, parts in tensors.items()]


_ROPE_SCALING_READ = {  # rope_scaling types llama.cpp's graph of each GGUF family applies as HF does
    "linear": tuple(_GGUF_ARCH), "llama3": ("llama", "mistral"), "longrope": ("phi3",)}
_BIASES_READ = ("llama", "mistral")  # llama.cpp's llama graph alone reads attn_output and ffn biases
_QKV_BIASES = (".self_attn.q_proj.bias", ".self_attn.k_proj.bias", ".self_attn.v_proj.bias")


def rope_scaling_type(arch: Architecture) -> str | None:
    """The config's rope_scaling type (HF's rope_type, or the older "type"), lower case; None without one."""
    scaling = arch.rope_scaling or {}
    kind = str(scaling.get("rope_type", scaling.get("type", "")) or "").lower()
    return None if kind in ("", "default") else kind


def check_convertible(arch: Architecture, folder: Path) -> None:
    """Refuse a checkpoint whose GGUF llama.cpp would run as another model (its graph hardcodes these)."""
    def refuse(why: str) -> None:
        raise ArtifactError(f"{folder}: {why}, so its GGUF would compute another model")

    scaling = rope_scaling_type(arch)
    if scaling is not None and arch.model_type not in _ROPE_SCALING_READ.get(scaling, ()):
        refuse(f"rope_scaling type {scaling!r} is not one edgeprof writes for llama.cpp's "
               f"{_GGUF_ARCH[arch.model_type]} graph")
    if arch.model_type not in _BIASES_READ:  # every family's graph reads q/k/v biases (create_tensor_qkv)
        unread = [t.name for t in arch.tensors() if t.role == "bias" and not t.name.endswith(_QKV_BIASES)]
        if unread:
            refuse(f"llama.cpp's {_GGUF_ARCH[arch.model_type]} graph has no place for {unread[0]} "
                   f"({len(unread)} such bias tensors)")

    if arch.model_type == "smollm3" and arch.rope_layers != tuple((n + 1) % 4 != 0 for n in range(arch.num_layers)):
        refuse("llama.cpp runs SmolLM3 with every 4th layer without RoPE; this checkpoint's no_rope_layers differ")
    if arch.is_gemma and not math.isclose(arch.query_scale, arch.head_dim ** -0.5):
        refuse(f"llama.cpp scales Gemma's queries by head_dim**-0.5; this query_pre_attn_scalar is not head_dim "
               f"({arch.head_dim})")
    if arch.model_type == "gemma3_text" and arch.attn_softcap:
        refuse("llama.cpp's Gemma 3 graph has no attention soft-cap; this config sets one")
    if arch.model_type == "qwen3_moe" and not arch.norm_topk_prob:
        refuse("llama.cpp renormalises Qwen3-MoE's top-k routing weights; this config's norm_topk_prob is false")
    if arch.model_type == "olmoe" and (arch.norm_topk_prob or arch.config.get("clip_qkv")
                                       or arch.num_kv_heads != arch.num_heads):
        refuse("llama.cpp runs OLMoE with unnormalised routing weights, no clip_qkv and as many KV heads as heads; "
               "this config differs")


def _add_family_metadata(writer: gguf.GGUFWriter, arch: Architecture) -> None:
    """The keys each family's llama.cpp graph reads beyond the common ones."""
    if arch.sliding_window:
        writer.add_sliding_window(arch.sliding_window)
        writer.add_sliding_window_pattern(list(arch.swa_layers))
    if arch.model_type == "gemma3_text":
        writer.add_rope_freq_base_swa(arch.local_rope_theta)
    if rope_scaling_type(arch) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(arch.rope_scaling["factor"]))
    if arch.attn_softcap:
        writer.add_attn_logit_softcapping(arch.attn_softcap)
    if arch.final_softcap:
        writer.add_final_logit_softcapping(arch.final_softcap)
    if arch.is_moe:
        writer.add_expert_count(arch.num_experts)
        writer.add_expert_used_count(arch.experts_per_token)
        writer.add_expert_feed_forward_length(arch.expert_intermediate_size)
    longrope = longrope_factors(arch)
    if longrope is not None:
        original = int(arch.config["original_max_position_embeddings"])
        writer.add_rope_scaling_attn_factors(longrope_attention_factor(arch))
        writer.add_rope_scaling_orig_ctx_len(original)


def longrope_factors(arch: Architecture) -> tuple[np.ndarray, np.ndarray] | None:
    """Phi's LongRoPE (short, long) per-frequency divisors, or None without LongRoPE."""
    if rope_scaling_type(arch) != "longrope":
        return None
    scaling = arch.rope_scaling
    return (np.asarray(scaling["short_factor"], dtype=np.float32), np.asarray(scaling["long_factor"], dtype=np.float32))


def longrope_attention_factor(arch: Architecture) -> float:
    """LongRoPE's cos/sin magnitude: sqrt(1 + ln(scale) / ln(original context)), as HF computes it."""
    original = int(arch.config["original_max_position_embeddings"])
    scale = arch.max_position_embeddings / original
    return 1.0 if scale <= 1.0 else math.sqrt(1 + math.log(scale) / math.log(original))


def convert_hf_to_gguf(folder: Path, arch: Architecture, out_path: Path, dtype_name: str, model_name: str,
                       on_tensor: Callable[[int, int], None] | None = None) -> None:
    """Write `out_path` as a GGUF of `dtype_name` ("f32" or "f16"); `on_tensor(done, total)` reports progress."""
    dtype = np.dtype(np.float32 if dtype_name == "f32" else np.float16)
    check_convertible(arch, folder)
    checkpoint = SafetensorsCheckpoint(folder)
    vocab = read_vocabulary(folder, arch)
    writer = gguf.GGUFWriter(out_path, _GGUF_ARCH[arch.model_type])
    writer.add_name(model_name)
    writer.add_context_length(arch.max_position_embeddings)
    writer.add_embedding_length(arch.hidden_size)
    writer.add_block_count(arch.num_layers)
    writer.add_feed_forward_length(arch.intermediate_size)
    writer.add_head_count(arch.num_heads)
    writer.add_head_count_kv(arch.num_kv_heads)
    writer.add_rope_freq_base(arch.rope_theta)
    writer.add_rope_dimension_count(arch.rotary_dim)
    writer.add_key_length(arch.head_dim)
    writer.add_value_length(arch.head_dim)
    writer.add_layer_norm_rms_eps(arch.rms_norm_eps)
    writer.add_vocab_size(len(vocab.tokens))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype_name == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    _add_family_metadata(writer, arch)
    write_vocabulary(writer, vocab, arch)

    tensors = _gguf_tensors(arch)
    check_all_written(folder, arch, checkpoint, tensors)
    for tensor in tensors:
        for part in tensor.parts:
            if part.name not in checkpoint:
                raise ArtifactError(f"{folder}: checkpoint lacks tensor {part.name}")
        target = tensor.dtype(dtype)
        writer.add_tensor_info(tensor.name, tensor.shape, target, math.prod(tensor.shape) * target.itemsize)
    extras = _extra_tensors(arch)
    for name, values in extras:
        writer.add_tensor_info(name, values.shape, values.dtype, values.nbytes)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    total = len(tensors)
    for done, tensor in enumerate(tensors, 1):
        parts = [_prepare(arch, part, checkpoint.read(part.name), dtype) for part in tensor.parts]
        writer.write_tensor_data(np.stack(parts) if tensor.parts[0].expert >= 0 else parts[0])
        if on_tensor:
            on_tensor(done, total)
    for _, values in extras:
        writer.write_tensor_data(values)
    writer.close()


# Checkpoint tensors that are not weights: rotary tables some older checkpoints saved (llama.cpp's own
# converter skips them too; the GGUF recomputes them from its rope metadata).
_NOT_WEIGHTS = re.compile(r"\.rotary_emb\.inv_freq$")


def check_all_written(folder: Path, arch: Architecture, checkpoint: SafetensorsCheckpoint,
                      tensors: list[_GgufTensor]) -> None:
    """Every checkpoint tensor must reach the GGUF: one the exporter would leave out is an error naming it
    (a dropped bias once exported silently and computed another model). A tied checkpoint's saved
    lm_head.weight is the one exception: HF ties it to the embedding and never reads it either."""
    written = {part.name for tensor in tensors for part in tensor.parts}
    left = [name for name in checkpoint.names() if name not in written and not _NOT_WEIGHTS.search(name)
            and not (arch.tie_word_embeddings and name == "lm_head.weight")]
    if left:
        more = f" (and {len(left) - 1} more)" if len(left) > 1 else ""
        raise ArtifactError(f"{folder}: the GGUF export has no place for checkpoint tensor {left[0]}{more}; "
                            f"refused rather than dropped (config model_type {arch.model_type!r})")


def _extra_tensors(arch: Architecture) -> list[tuple[str, np.ndarray]]:
    """Tensors llama.cpp wants that the checkpoint keeps in its config: rope frequency factors."""
    extras = []
    rope_factors = llama3_rope_factors(arch)
    if rope_factors is not None:
        extras.append(("rope_freqs.weight", rope_factors))
    longrope = longrope_factors(arch)
    if longrope is not None:
        extras += [("rope_factors_short.weight", longrope[0]), ("rope_factors_long.weight", longrope[1])]
    return extras
