"""`edgeprof models compare`: the converged-architecture table of the paper, for presets, HF folders and
GGUF files side by side, with KV-cache and weight bytes and, on request, predicted decode speed.

Each row is what the model's own description says: a preset's or folder's HF config, or a GGUF's metadata.
Fields a source does not state are None (shown as "-"), never guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from edgeprof.analysis.prediction import predictor
from edgeprof.errors import PredictionUnavailable
from edgeprof.hardware.devices import get_profile, load_calibration
from edgeprof.models.hub import pin_revisions
from edgeprof.models.source import SYNTH_PREFIX, ModelSource, resolve
from edgeprof.quant import GGUF_QUANTS

SURVEY_QUANTS = ("f16", "q8_0", "q4_k_m")
_ACTIVATIONS = {"silu": "SwiGLU", "gelu_pytorch_tanh": "GeGLU", "gelu": "GeGLU"}


@dataclass(frozen=True)
class SurveyRow:
    model: str
    family: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    gqa_ratio: float  # query heads per KV head (1 = MHA; heads = MQA)
    head_dim: int
    ffn_ratio: float | None  # FFN width / hidden
    activation: str | None
    norms: str | None  # where the norms sit
    positional: str | None
    window: int | None  # sliding-window size of local layers
    window_pattern: str | None  # "5 local : 1 global"
    experts: str | None  # "total/active"
    tied_embeddings: bool
    parameters: int
    active_parameters: int | None  # per token (MoE: the routed experts a token does not pick left out)
    kv_bytes_per_token: float  # f16 K and V, all layers
    kv_bytes_at_context: float
    weight_bytes: dict  # quantization -> bytes (a GGUF file: its own quantization only)
    predicted_decode_tps: float | str | None = None  # batch 1 at the context, or why not

    def to_dict(self) -> dict:
        flat = asdict(self)
        weights = flat.pop("weight_bytes")
        flat.update({f"weights_{quant}_bytes": value for quant, value in weights.items()})
        return flat


def survey_row(source: ModelSource, context: int) -> SurveyRow:
    """One model's row: from its architecture (presets, HF folders) or its GGUF metadata."""
    if source.is_gguf:
        facts = source.gguf_facts()
        kv = facts.kv_cache_bytes_per_token()
        active = facts.architecture().active_parameter_count if facts.modelled else None
        return SurveyRow(
            model=source.name, family=facts.family, layers=facts.layers, hidden=facts.hidden, heads=facts.heads,
            kv_heads=facts.kv_heads, gqa_ratio=facts.heads / facts.kv_heads if facts.kv_heads else 0.0,
            head_dim=facts.key_length, ffn_ratio=facts.ffn / facts.hidden if facts.ffn and facts.hidden else None,
            activation=None, norms=None, positional=f"RoPE θ={facts.rope_base:g}" if facts.rope_base else None,
            window=facts.sliding_window, window_pattern=_pattern(facts.swa_layers) if facts.sliding_window else None,
            experts=f"{facts.experts}/{facts.experts_used}" if facts.experts else None,
            tied_embeddings=facts.tied_embeddings, parameters=facts.parameters, active_parameters=active,
            kv_bytes_per_token=kv, kv_bytes_at_context=facts.kv_cache_bytes(context),
            weight_bytes={facts.file_type or "file": facts.file_bytes})
    arch = source.architecture
    kv = arch.kv_cache_bytes_per_token()
    return SurveyRow(
        model=source.name, family=arch.model_type, layers=arch.num_layers, hidden=arch.hidden_size,
        heads=arch.num_heads, kv_heads=arch.num_kv_heads, gqa_ratio=arch.num_heads / arch.num_kv_heads,
        head_dim=arch.head_dim,
        ffn_ratio=(arch.expert_intermediate_size if arch.is_moe else arch.intermediate_size) / arch.hidden_size,
        activation="GeGLU" if arch.activation == "gelu_tanh" else "SwiGLU", norms=_norms(arch),
        positional=_positional(arch), window=arch.sliding_window,
        window_pattern=_pattern(arch.swa_layers) if arch.sliding_window else None,
        experts=f"{arch.num_experts}/{arch.experts_per_token}" if arch.is_moe else None,
        tied_embeddings=arch.tie_word_embeddings, parameters=arch.parameter_count,
        active_parameters=arch.active_parameter_count, kv_bytes_per_token=kv,
        kv_bytes_at_context=arch.kv_cache_bytes(context, window_cells=arch.swa_cache_cells()),
        weight_bytes={q: arch.gguf_weight_bytes(GGUF_QUANTS[q]) for q in SURVEY_QUANTS})


def _norms(arch) -> str:
    placement = "pre+post (sandwich) RMSNorm, 1+w" if arch.is_gemma else "pre-norm RMSNorm"
    if arch.qk_norm:
        placement += " + q/k " + ("per head" if arch.qk_norm_per_head else "whole projection")
    return placement


def _positional(arch) -> str:
    rope = arch.rope_scaling or {}
    text = f"RoPE θ={arch.rope_theta:g}"
    if rope:
        text += f" ({rope.get('rope_type', rope.get('type'))} ×{rope.get('factor', '')})"
    if arch.rotary_dim < arch.head_dim:
        text += f" on {arch.rotary_dim}/{arch.head_dim} dims"
    if arch.sliding_window and arch.local_rope_theta != arch.rope_theta:
        text += f"; local θ={arch.local_rope_theta:g}"
    if not all(arch.rope_layers):
        text += f"; NoPE on {arch.rope_layers.count(False)} layers"
    return text


def _pattern(swa_layers) -> str | None:
    """"5 local : 1 global" from per-layer window flags (counted over the whole stack)."""
    if not swa_layers:
        return None
    local = sum(swa_layers)
    global_ = len(swa_layers) - local
    return f"{local} local : {global_} global"


def predicted_decode(source: ModelSource, context: int, profile, calibration: dict | None,
                     quant: str = "q4_k_m") -> float | str:
    """Batch-1 decode tokens/s at `context` on `profile` (GPU where it has one), or "unavailable: <why>"."""
    try:
        chain = predictor(source, quant, profile, bool(profile.data.get("accelerator")), calibration)
    except PredictionUnavailable as exc:
        return f"unavailable: {exc.reason}"
    gen = 2
    return chain.predict(1, max(1, context - gen), gen, sampler="greedy").decode_tps


def survey(models: list[str], context: int, device: str = "", revision: str = "") -> list[SurveyRow]:
    """`models compare`: one row per model (a bare preset name means synth:NAME; HF folders, GGUF files and Hub
    ids as given, Hub ids pinned to `revision`), with predicted batch-1 decode on `device` where one is named."""
    specs = [m if m.startswith(SYNTH_PREFIX) or "/" in m or m.endswith(".gguf") or Path(m).exists()
             else SYNTH_PREFIX + m for m in models]
    sources = [resolve(spec) for spec in pin_revisions(specs, revision)]
    rows = [survey_row(source, context) for source in sources]
    if not device:
        return rows
    profile = get_profile(device)
    calibration = load_calibration(profile.name)
    return [replace(row, predicted_decode_tps=predicted_decode(source, context, profile, calibration))
            for row, source in zip(rows, sources)]
