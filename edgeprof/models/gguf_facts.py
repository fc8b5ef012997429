"""What a GGUF file says about its model, from its metadata and tensor table (`gguf_header`, with the
`gguf` package's key names), for any family llama.cpp writes.

Users bring GGUFs of families edgeprof has no preset for. Their shape (layers, heads, KV heads, head
sizes, experts, sliding window, context) is enough for `models show` and for the KV-cache part of the
memory fit; a roofline prediction additionally needs a family the predictor models, and says so otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from edgeprof.errors import ModelSpecError, PredictionUnavailable
from edgeprof.models.architecture import Architecture, llama_swa_cells, periodic_swa_layers, windowed_kv_bytes

# GGUF architectures whose graph the roofline models, and the HF model_type that describes them
# (llama.cpp writes Mistral checkpoints as "llama").
MODELLED_FAMILIES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "smollm3": "smollm3", "gemma2": "gemma2",
                     "gemma3": "gemma3_text", "phi3": "phi3", "qwen3moe": "qwen3_moe", "olmoe": "olmoe"}
_DEFAULT_SWA_PERIOD = {"gemma2": 2, "gemma3": 6}  # llama.cpp's load_swa_pattern defaults


@dataclass(frozen=True)
class GgufFacts:
    """A GGUF's model, as its metadata states it."""

    family: str  # general.architecture: llama, qwen2, qwen3, gemma3, olmoe, ...
    name: str | None
    file_type: str | None  # the quantization llama.cpp recorded, lower case (q4_k_m, f16, ...)
    layers: int
    hidden: int
    ffn: int | None
    heads: int
    kv_heads: int
    key_length: int
    value_length: int
    context_length: int | None
    vocab: int
    tied_embeddings: bool
    sliding_window: int | None
    experts: int | None
    experts_used: int | None
    rope_base: float | None
    rms_eps: float | None
    parameters: int
    file_bytes: int
    swa_layers: tuple[bool, ...] | None = None  # per layer, whether it is a sliding-window layer
    expert_ffn: int | None = None
    rope_dims: int | None = None
    attn_softcap: float | None = None
    final_softcap: float | None = None
    rope_base_swa: float | None = None

    def kv_cache_bytes_per_token(self, bytes_per_element: float = 2.0) -> float:
        """K and V of one token in every layer (without sliding-window savings: an upper bound)."""
        return self.layers * self.kv_heads * (self.key_length + self.value_length) * bytes_per_element

    def kv_cache_bytes(self, context: int, bytes_per_element: float = 2.0, ubatch: int = 512) -> float:
        """K and V llama.cpp holds for `context` tokens of one sequence: a sliding-window layer keeps the window
        plus a micro-batch, padded to 256 (the native tools' default); other layers keep every token."""
        per_layer = self.kv_heads * (self.key_length + self.value_length) * bytes_per_element
        local = sum(self.swa_layers or ()) if self.sliding_window else 0
        return windowed_kv_bytes(per_layer, self.layers, local, context,
                                 llama_swa_cells(self.sliding_window, ubatch) or context)

    @property
    def modelled(self) -> bool:
        return self.family in MODELLED_FAMILIES

    def hf_config(self) -> dict:
        """The equivalent HF config fields of a modelled family (for `Architecture.from_hf_config`)."""
        if not self.modelled:
            raise PredictionUnavailable(self.family, f"the roofline models {', '.join(sorted(MODELLED_FAMILIES))}")
        config = {"model_type": MODELLED_FAMILIES[self.family], "hidden_size": self.hidden,
                  "intermediate_size": self.ffn or self.expert_ffn, "num_hidden_layers": self.layers,
                  "num_attention_heads": self.heads, "num_key_value_heads": self.kv_heads, "head_dim": self.key_length,
                  "vocab_size": self.vocab, "max_position_embeddings": self.context_length or 2048,
                  "rms_norm_eps": self.rms_eps or 1e-6, "rope_theta": self.rope_base or 10000.0,
                  "tie_word_embeddings": self.tied_embeddings}
        if self.family in _DEFAULT_SWA_PERIOD:
            config.update(hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=self.key_length,
                          attn_logit_softcapping=self.attn_softcap, final_logit_softcapping=self.final_softcap,
                          rope_local_base_freq=self.rope_base_swa or self.rope_base or 10000.0)
            if self.sliding_window and self.swa_layers:
                config.update(sliding_window=self.sliding_window, layer_types=[
                    "sliding_attention" if local else "full_attention" for local in self.swa_layers])
        if self.family == "phi3" and self.rope_dims:
            config["partial_rotary_factor"] = self.rope_dims / self.key_length
        if self.experts:
            config.update(num_experts=self.experts, num_experts_per_tok=self.experts_used,
                          norm_topk_prob=self.family == "qwen3moe")
            if self.family == "qwen3moe":
                config["moe_intermediate_size"] = self.expert_ffn or self.ffn
            else:
                config["intermediate_size"] = self.expert_ffn or self.ffn
        return config

    def architecture(self):
        """An `Architecture` for the roofline, or a one-line ModelSpecError naming the unmodelled family."""
        return Architecture.from_hf_config(self.hf_config())


def read_gguf_facts(path: Path) -> GgufFacts:
    """Read `path`'s metadata and tensor table; a file that is not a readable GGUF is a ModelSpecError."""
    import gguf

    from edgeprof.models.gguf_header import GgufHeaderError, SkippedStrings, read_gguf_header

    try:
        header = read_gguf_header(path)
    except (GgufHeaderError, OSError) as exc:
        raise ModelSpecError(f"{path}: not a readable GGUF ({type(exc).__name__}: {exc})") from None

    def field(key: str):
        found = header.fields.get(key)
        return None if isinstance(found, SkippedStrings) else found

    family = field(gguf.Keys.General.ARCHITECTURE)
    if not family:
        raise ModelSpecError(f"{path}: the GGUF names no architecture (general.architecture)")

    def arch(key: str, default=None):
        value = field(key.format(arch=family))
        if isinstance(value, list):  # per-layer values (e.g. KV heads): the largest bounds memory
            value = max(value) if value else None
        return default if value is None else value

    shapes = {t.name: list(t.shape) for t in header.tensors}
    heads = int(arch(gguf.Keys.Attention.HEAD_COUNT, 0))
    hidden = int(arch(gguf.Keys.LLM.EMBEDDING_LENGTH, 0))
    embedding = shapes.get("token_embd.weight", [hidden, 0])
    key_length = int(arch(gguf.Keys.Attention.KEY_LENGTH, hidden // heads if heads else 0))
    file_type = field(gguf.Keys.General.FILE_TYPE)
    try:
        type_name = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_").removeprefix("ALL_").lower()
    except (TypeError, ValueError):
        type_name = None
    return GgufFacts(
        family=str(family), name=field(gguf.Keys.General.NAME), file_type=type_name,
        layers=int(arch(gguf.Keys.LLM.BLOCK_COUNT, 0)), hidden=hidden,
        ffn=_int_or_none(arch(gguf.Keys.LLM.FEED_FORWARD_LENGTH)), heads=heads,
        kv_heads=int(arch(gguf.Keys.Attention.HEAD_COUNT_KV, heads)), key_length=key_length,
        value_length=int(arch(gguf.Keys.Attention.VALUE_LENGTH, key_length)),
        context_length=_int_or_none(arch(gguf.Keys.LLM.CONTEXT_LENGTH)),
        vocab=int(arch(gguf.Keys.LLM.VOCAB_SIZE, embedding[-1])),
        tied_embeddings="output.weight" not in shapes,
        sliding_window=_int_or_none(arch(gguf.Keys.Attention.SLIDING_WINDOW)),
        experts=_int_or_none(arch(gguf.Keys.LLM.EXPERT_COUNT)),
        experts_used=_int_or_none(arch(gguf.Keys.LLM.EXPERT_USED_COUNT)),
        rope_base=_float_or_none(arch(gguf.Keys.Rope.FREQ_BASE)),
        rms_eps=_float_or_none(arch(gguf.Keys.Attention.LAYERNORM_RMS_EPS)),
        parameters=sum(math.prod(shape) for shape in shapes.values()),
        file_bytes=path.stat().st_size,
        swa_layers=_swa_layers(field(gguf.Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=family)),
                               _DEFAULT_SWA_PERIOD.get(str(family)), int(arch(gguf.Keys.LLM.BLOCK_COUNT, 0))),
        expert_ffn=_int_or_none(arch(gguf.Keys.LLM.EXPERT_FEED_FORWARD_LENGTH)),
        rope_dims=_int_or_none(arch(gguf.Keys.Rope.DIMENSION_COUNT)),
        attn_softcap=_float_or_none(arch(gguf.Keys.LLM.ATTN_LOGIT_SOFTCAPPING)),
        final_softcap=_float_or_none(arch(gguf.Keys.LLM.FINAL_LOGIT_SOFTCAPPING)),
        rope_base_swa=_float_or_none(arch(gguf.Keys.Rope.FREQ_BASE_SWA)),
    )


def _swa_layers(pattern, default_period: int | None, layers: int) -> tuple[bool, ...] | None:
    """The per-layer window flags: the GGUF's array, or llama.cpp's rule for a period
    (`periodic_swa_layers`), the family's default period where the key is absent."""
    if isinstance(pattern, list):
        return tuple(bool(flag) for flag in pattern)
    period = int(pattern) if pattern is not None else default_period
    return None if period is None else periodic_swa_layers(period, layers)


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def _float_or_none(value) -> float | None:
    return None if value is None else float(value)
