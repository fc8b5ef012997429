"""A transformer decoder described by its HF config, and what follows from it.

The tensor list here is the single source of truth for shapes: synth models are written from it,
parameter counts and weight bytes are summed over it, and the GGUF exporter checks against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgeprof.errors import ModelSpecError
from edgeprof.quant import GGML_BLOCKS, GgufQuant, gguf_tensor_type

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "smollm3", "gemma2", "gemma3_text", "phi3",
                         "qwen3_moe", "olmoe")
QK_NORM_MODEL_TYPES = ("qwen3", "qwen3_moe", "gemma3_text", "olmoe")  # RMSNorm on q and k before the rotary
GEMMA_MODEL_TYPES = ("gemma2", "gemma3_text")  # sandwich norms, (1 + w) RMSNorm, GeGLU, sliding windows
MOE_MODEL_TYPES = ("qwen3_moe", "olmoe")  # routed experts, top-k per token
FUSED_MODEL_TYPES = ("phi3",)  # one qkv_proj and one gate_up_proj per layer in the checkpoint
# Families whose HF attention has q/k/v/o biases when the config sets attention_bias (transformers'
# modeling_*.py); Mistral and Phi-3 hardcode bias=False, Qwen2 always has q/k/v biases and never an o bias.
ATTENTION_BIAS_MODEL_TYPES = ("llama", "qwen3", "smollm3", "gemma2", "gemma3_text", "qwen3_moe", "olmoe")
MLP_BIAS_MODEL_TYPES = ("llama", "smollm3")  # gate/up/down biases when the config sets mlp_bias


@dataclass(frozen=True)
class TensorSpec:
    """One weight tensor: its HF name, shape (rows, cols for matrices) and its role in the layer."""

    name: str
    shape: tuple[int, ...]
    role: str  # embed, norm, qk_norm, q, k, v, qkv, o, gate, up, gate_up, down, bias, router, output
    layer: int = -1
    expert: int = -1  # the routed expert a MoE tensor belongs to

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
                qkv_bias=model_type == "qwen2" or (model_type in ATTENTION_BIAS_MODEL_TYPES
                                                   and bool(config.get("attention_bias", False))),
                rope_scaling=config.get("rope_scaling"),
                config=dict(config),
            )
        except KeyError as exc:
            raise ModelSpecError(f"config is missing the field {exc.args[0]!r}") from None

    def __post_init__(self) -> None:
        if self.model_type == "qwen3_moe" and (self.config.get("mlp_only_layers") or
                                               int(self.config.get("decoder_sparse_step", 1)) != 1):
            raise ModelSpecError("qwen3_moe with dense layers (mlp_only_layers, decoder_sparse_step) is not supported: "
                                 "llama.cpp runs every Qwen3-MoE layer as a MoE layer")
        if self.is_moe and not 0 < self.experts_per_token <= self.num_experts:
            raise ModelSpecError(f"num_experts_per_tok must be 1..num_experts ({self.num_experts}), "
                                 f"not {self.experts_per_token}")

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
    def o_bias(self) -> bool:
        """Whether o_proj has a bias (attention_bias in the families whose HF attention reads it)."""
        return self.model_type in ATTENTION_BIAS_MODEL_TYPES and bool(self.config.get("attention_bias", False))

    @property
    def mlp_bias(self) -> bool:
        """Whether gate/up/down have biases (Llama's and SmolLM3's mlp_bias)."""
        return self.model_type in MLP_BIAS_MODEL_TYPES and bool(self.config.get("mlp_bias", False))

    @property
    def qk_norm(self) -> bool:
        return self.model_type in QK_NORM_MODEL_TYPES

    @property
    def qk_norm_per_head(self) -> bool:
        """Qwen3 and Gemma 3 normalise each head (a head_dim weight); OLMoE the whole q and k projections."""
        return self.model_type != "olmoe"

    @property
    def is_gemma(self) -> bool:
        return self.model_type in GEMMA_MODEL_TYPES

    @property
    def is_moe(self) -> bool:
        return self.model_type in MOE_MODEL_TYPES

    @property
    def fused_projections(self) -> bool:
        return self.model_type in FUSED_MODEL_TYPES

    @property
    def activation(self) -> str:
        """"gelu_tanh" (Gemma's GeGLU) or "silu" (SwiGLU), the gate's nonlinearity."""
        act = self.config.get("hidden_activation") or self.config.get("hidden_act") or "silu"
        return "gelu_tanh" if self.is_gemma or str(act).startswith("gelu") else "silu"

    @property
    def embedding_scale(self) -> float:
        """Gemma multiplies the token embeddings by sqrt(hidden); others use them as they are."""
        return math.sqrt(self.hidden_size) if self.is_gemma else 1.0

    @property
    def query_scale(self) -> float:
        """The factor on q·k: Gemma's query_pre_attn_scalar**-0.5, otherwise head_dim**-0.5."""
        scalar = self.config.get("query_pre_attn_scalar") if self.is_gemma else None
        return float(scalar or self.head_dim) ** -0.5

    @property
    def attn_softcap(self) -> float | None:
        """Gemma 2 bounds attention scores by cap·tanh(score/cap)."""
        return _positive(self.config.get("attn_logit_softcapping")) if self.is_gemma else None

    @property
    def final_softcap(self) -> float | None:
        """Gemma 2 bounds the logits likewise."""
        return _positive(self.config.get("final_logit_softcapping")) if self.is_gemma else None

    @property
    def sliding_window(self) -> int | None:
        """Tokens a local layer attends to (itself included), for the families llama.cpp runs windowed.
        Mistral v0.1's config names a window too, but llama.cpp runs it as full attention, so it has none here."""
        window = self.config.get("sliding_window") if self.is_gemma else None
        return int(window) if window else None

    @property
    def swa_layers(self) -> tuple[bool, ...]:
        """Per layer, whether it attends within the sliding window: the config's layer_types, else Gemma 2's
        alternation (even layers local) and Gemma 3's sliding_window_pattern (5 local, then 1 global)."""
        if self.sliding_window is None:
            return (False,) * self.num_layers
        types = self.config.get("layer_types")
        if types:
            return tuple(kind == "sliding_attention" for kind in types)
        period = 2 if self.model_type == "gemma2" else int(self.config.get("sliding_window_pattern", 6))
        return periodic_swa_layers(period, self.num_layers)

    @property
    def local_rope_theta(self) -> float:
        """Gemma 3's local layers rotate with their own base (rope_local_base_freq)."""
        return float(self.config.get("rope_local_base_freq", self.rope_theta))

    @property
    def rotary_dim(self) -> int:
        """Dimensions of each head the rotary embedding turns (Phi's partial_rotary_factor)."""
        return int(self.head_dim * float(self.config.get("partial_rotary_factor", 1.0)))

    @property
    def num_experts(self) -> int:
        return int(self.config.get("num_experts", 0)) if self.is_moe else 0

    @property
    def experts_per_token(self) -> int:
        return int(self.config.get("num_experts_per_tok", 0)) if self.is_moe else 0

    @property
    def expert_intermediate_size(self) -> int:
        """One expert's FFN width (Qwen3-MoE's moe_intermediate_size; OLMoE's intermediate_size)."""
        return int(self.config.get("moe_intermediate_size") or self.intermediate_size) if self.is_moe else 0

    @property
    def norm_topk_prob(self) -> bool:
        """Whether the top-k routing weights are renormalised to sum to one."""
        return bool(self.config.get("norm_topk_prob", False))

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def tensors(self) -> list[TensorSpec]:
        """Every weight tensor with its HF name, in checkpoint order."""
        h = self.hidden_size
        specs = [TensorSpec("model.embed_tokens.weight", (self.vocab_size, h), "embed")]
        for n in range(self.num_layers):
            specs += self._attention_tensors(n) + self._ffn_tensors(n)
        specs.append(TensorSpec("model.norm.weight", (h,), "norm"))
        if not self.tie_word_embeddings:
            specs.append(TensorSpec("lm_head.weight", (self.vocab_size, h), "output"))
        return specs

    def _attention_tensors(self, n: int) -> list[TensorSpec]:
        h, q, kv, p = self.hidden_size, self.q_dim, self.kv_dim, f"model.layers.{n}."
        specs = [TensorSpec(p + "input_layernorm.weight", (h,), "norm", n)]
        if self.fused_projections:
            specs.append(TensorSpec(p + "self_attn.qkv_proj.weight", (q + 2 * kv, h), "qkv", n))
        else:
            specs += [TensorSpec(p + "self_attn.q_proj.weight", (q, h), "q", n),
                      TensorSpec(p + "self_attn.k_proj.weight", (kv, h), "k", n),
                      TensorSpec(p + "self_attn.v_proj.weight", (kv, h), "v", n)]
        if self.qkv_bias:
            specs += [TensorSpec(p + "self_attn.q_proj.bias", (q,), "bias", n),
                      TensorSpec(p + "self_attn.k_proj.bias", (kv,), "bias", n),
                      TensorSpec(p + "self_attn.v_proj.bias", (kv,), "bias", n)]
        if self.qk_norm:
            q_width, k_width = (self.head_dim, self.head_dim) if self.qk_norm_per_head else (q, kv)
            specs += [TensorSpec(p + "self_attn.q_norm.weight", (q_width,), "qk_norm", n),
                      TensorSpec(p + "self_attn.k_norm.weight", (k_width,), "qk_norm", n)]
        specs.append(TensorSpec(p + "self_attn.o_proj.weight", (h, q), "o", n))
        if self.o_bias:
            specs.append(TensorSpec(p + "self_attn.o_proj.bias", (h,), "bias", n))
        specs.append(TensorSpec(p + "post_attention_layernorm.weight", (h,), "norm", n))
        return specs

    def _ffn_tensors(self, n: int) -> list[TensorSpec]:
        h, i, p = self.hidden_size, self.intermediate_size, f"model.layers.{n}."
        specs = []
        if self.is_gemma:  # Gemma's sandwich: post_attention_layernorm above closes attention, this opens the FFN
            specs.append(TensorSpec(p + "pre_feedforward_layernorm.weight", (h,), "norm", n))
        if self.is_moe:
            e_i = self.expert_intermediate_size
            specs.append(TensorSpec(p + "mlp.gate.weight", (self.num_experts, h), "router", n))
            for e in range(self.num_experts):
                ep = p + f"mlp.experts.{e}."
                specs += [TensorSpec(ep + "gate_proj.weight", (e_i, h), "gate", n, e),
                          TensorSpec(ep + "up_proj.weight", (e_i, h), "up", n, e),
                          TensorSpec(ep + "down_proj.weight", (h, e_i), "down", n, e)]
        elif self.fused_projections:
            specs += [TensorSpec(p + "mlp.gate_up_proj.weight", (2 * i, h), "gate_up", n),
                      TensorSpec(p + "mlp.down_proj.weight", (h, i), "down", n)]
        else:
            specs += [TensorSpec(p + "mlp.gate_proj.weight", (i, h), "gate", n),
                      TensorSpec(p + "mlp.up_proj.weight", (i, h), "up", n),
                      TensorSpec(p + "mlp.down_proj.weight", (h, i), "down", n)]
            if self.mlp_bias:
                specs += [TensorSpec(p + "mlp.gate_proj.bias", (i,), "bias", n),
                          TensorSpec(p + "mlp.up_proj.bias", (i,), "bias", n),
                          TensorSpec(p + "mlp.down_proj.bias", (h,), "bias", n)]
        if self.is_gemma:
            specs.append(TensorSpec(p + "post_feedforward_layernorm.weight", (h,), "norm", n))
        return specs

    @property
    def parameter_count(self) -> int:
        """Unique parameters (a tied lm_head counts once, as HF does)."""
        return sum(t.numel for t in self.tensors())

    @property
    def active_parameter_count(self) -> int:
        """Parameters one token computes with: all but the routed experts it does not pick."""
        idle = self.num_experts - self.experts_per_token
        return self.parameter_count - idle * 3 * self.hidden_size * self.expert_intermediate_size * self.num_layers

    def gguf_weight_bytes(self, quant: GgufQuant) -> int:
        """Weight bytes of a GGUF of this model at `quant`, following llama.cpp's per-tensor types."""
        total = 0
        for t in self.tensors():
            if len(t.shape) == 1 or t.role == "router":
                total += t.numel * 4  # norms, biases and MoE routers stay f32, as llama.cpp keeps them
                continue
            role = {"v": "attn_v", "down": "ffn_down", "qkv": "attn_qkv"}.get(t.role, t.role)
            if t.role == "embed" and self.tie_word_embeddings:
                role = "output"  # llama.cpp quantizes a tied embedding as the output matrix
            ggml_type = gguf_tensor_type(quant, role, t.layer, self.num_layers, t.shape[-1])
            block, nbytes = GGML_BLOCKS[ggml_type]
            total += t.numel // block * nbytes
        return total

    def kv_cache_bytes_per_token(self, bytes_per_element: float = 2.0) -> float:
        """K and V for one token across all layers (f16 cache by default), windows aside."""
        return 2 * self.num_layers * self.kv_dim * bytes_per_element

    def swa_cache_cells(self, ubatch: int = 512) -> int | None:
        """Cells llama.cpp keeps per sequence on each local layer (`llama_swa_cells`)."""
        return llama_swa_cells(self.sliding_window, ubatch)

    def kv_cache_bytes(self, context: int, bytes_per_element: float = 2.0, window_cells: int | None = None) -> float:
        """K and V held for `context` tokens of one sequence: local layers keep at most `window_cells` cells
        (llama.cpp's SWA cache: the window plus a micro-batch, padded; the window itself by default)."""
        cells = window_cells if window_cells is not None else (self.sliding_window or context)
        return windowed_kv_bytes(2 * self.kv_dim * bytes_per_element, self.num_layers, sum(self.swa_layers), context,
                                 cells)


def periodic_swa_layers(period: int, layers: int) -> tuple[bool, ...]:
    """Window flags for a period n: the last layer of every n is global (llama.cpp's set_swa_pattern,
    il % n < n - 1, which is HF's (il + 1) % n != 0); a period of 0 makes every layer local."""
    return tuple(period == 0 or n % period < period - 1 for n in range(layers))


def windowed_kv_bytes(per_token_layer: float, layers: int, local_layers: int, context: int, cells: int) -> float:
    """K and V bytes for `context` tokens when `local_layers` of `layers` keep at most `cells` cells each."""
    return per_token_layer * ((layers - local_layers) * context + local_layers * min(context, cells))


def llama_swa_cells(window: int | None, ubatch: int = 512) -> int | None:
    """Cells llama.cpp's SWA cache holds per sequence on a sliding-window layer: the window plus a micro-batch,
    padded to 256 (llama-kv-cache-iswa.cpp, with swa_full off as in the native tools); None without a window."""
    if not window:
        return None
    return -(-(window + ubatch) // 256) * 256


def _positive(value) -> float | None:
    return float(value) if value else None
