"""A transformer decoder described by its HF config, and what follows from it.

The tensor list here is the single source of truth for shapes: synth models are written from it,
parameter counts and weight bytes are summed over it, and the GGUF exporter checks against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgeprof.errors import ModelSpecError
from edgeprof.quant import GGML_BLOCKS, GgufQuant, gguf_tensor_type

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "smollm3")
QK_NORM_MODEL_TYPES = ("qwen3",)  # RMSNorm over each head of q and k before the rotary embedding


@dataclass(frozen=True)
class TensorSpec:
    """One weight tensor: its HF name, shape (rows, cols for matrices) and its role in the layer."""

    name: str
    shape: tuple[int, ...]
    role: str  # embed, norm, qk_norm, q, k, v, o, gate, up, down, bias, output
    layer: int = -1

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Architecture:
    """The fields of an HF decoder config that shape compute and memory."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    qkv_bias: bool
    rope_scaling: dict | None = None
    config: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_hf_config(cls, config: dict) -> "Architecture":
        """Read an HF `config.json` mapping; unsupported families are a `ModelSpecError`."""
        model_type = config.get("model_type", "")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ModelSpecError(
                f"model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        try:
            hidden = int(config["hidden_size"])
            heads = int(config["num_attention_heads"])
            return cls(
                model_type=model_type,
                hidden_size=hidden,
                intermediate_size=int(config["intermediate_size"]),
                num_layers=int(config["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                vocab_size=int(config["vocab_size"]),
                max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
                rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
                rope_theta=float(config.get("rope_theta", 10000.0)),
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                qkv_bias=model_type == "qwen2" or bool(config.get("attention_bias", False)),
                rope_scaling=config.get("rope_scaling"),
                config=dict(config),
            )
        except KeyError as exc:
            raise ModelSpecError(f"config is missing the field {exc.args[0]!r}") from None

    @property
    def rope_layers(self) -> tuple[bool, ...]:
        """Per layer, whether it applies the rotary embedding. SmolLM3 leaves every 4th layer without
        positions (NoPE; `no_rope_layers` in its config, 1 = rotary); llama.cpp hardcodes that step."""
        if self.model_type != "smollm3":
            return (True,) * self.num_layers
        interval = int(self.config.get("no_rope_layer_interval", 4))
        flags = self.config.get("no_rope_layers") or [int((n + 1) % interval != 0) for n in range(self.num_layers)]
        return tuple(bool(flag) for flag in flags)

    @property
    def qk_norm(self) -> bool:
        return self.model_type in QK_NORM_MODEL_TYPES

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def tensors(self) -> list[TensorSpec]:
        """Every weight tensor with its HF name, in checkpoint order."""
        h, i, q, kv = self.hidden_size, self.intermediate_size, self.q_dim, self.kv_dim
        specs = [TensorSpec("model.embed_tokens.weight", (self.vocab_size, h), "embed")]
        for n in range(self.num_layers):
            p = f"model.layers.{n}."
            specs.append(TensorSpec(p + "input_layernorm.weight", (h,), "norm", n))
            specs.append(TensorSpec(p + "self_attn.q_proj.weight", (q, h), "q", n))
            specs.append(TensorSpec(p + "self_attn.k_proj.weight", (kv, h), "k", n))
            specs.append(TensorSpec(p + "self_attn.v_proj.weight", (kv, h), "v", n))
            if self.qkv_bias:
                specs.append(TensorSpec(p + "self_attn.q_proj.bias", (q,), "bias", n))
                specs.append(TensorSpec(p + "self_attn.k_proj.bias", (kv,), "bias", n))
                specs.append(TensorSpec(p + "self_attn.v_proj.bias", (kv,), "bias", n))
            if self.qk_norm:
                specs.append(TensorSpec(p + "self_attn.q_norm.weight", (self.head_dim,), "qk_norm", n))
                specs.append(TensorSpec(p + "self_attn.k_norm.weight", (self.head_dim,), "qk_norm", n))
            specs.append(TensorSpec(p + "self_attn.o_proj.weight", (h, q), "o", n))
            specs.append(TensorSpec(p + "post_attention_layernorm.weight", (h,), "norm", n))
            specs.append(TensorSpec(p + "mlp.gate_proj.weight", (i, h), "gate", n))
            specs.append(TensorSpec(p + "mlp.up_proj.weight", (i, h), "up", n))
            specs.append(TensorSpec(p + "mlp.down_proj.weight", (h, i), "down", n))
        specs.append(TensorSpec("model.norm.weight", (h,), "norm"))
        if not self.tie_word_embeddings:
            specs.append(TensorSpec("lm_head.weight", (self.vocab_size, h), "output"))
        return specs

    @property
    def parameter_count(self) -> int:
        """Unique parameters (a tied lm_head counts once, as HF does)."""
        return sum(t.numel for t in self.tensors())

    def gguf_weight_bytes(self, quant: GgufQuant) -> int:
        """Weight bytes of a GGUF of this model at `quant`, following llama.cpp's per-tensor types."""
        total = 0
        for t in self.tensors():
            if len(t.shape) == 1:
                total += t.numel * 4  # norms and biases stay f32
                continue
            role = {"v": "attn_v", "down": "ffn_down"}.get(t.role, t.role)
            if t.role == "embed" and self.tie_word_embeddings:
                role = "output"  # llama.cpp quantizes a tied embedding as the output matrix
            ggml_type = gguf_tensor_type(quant, role, t.layer, self.num_layers, t.shape[-1])
            block, nbytes = GGML_BLOCKS[ggml_type]
            total += t.numel // block * nbytes
        return total

    def kv_cache_bytes_per_token(self, bytes_per_element: float = 2.0) -> float:
        """K and V for one token across all layers (f16 cache by default)."""
        return 2 * self.num_layers * self.kv_dim * bytes_per_element
