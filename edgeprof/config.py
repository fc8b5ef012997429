"""Hyperparameters of one benchmark configuration, their validation and the ids that join runs.

Fields split in two. *Workload* fields (batch, lengths, context, KV type, sampler) define what is
computed; together with model, quantization and backend they make the `config_id`, identical on every
device, so an edge run and a server run of the same workload join on it. *Execution* fields (threads,
GPU layers, micro-batch sizes, flash attention) say how a device ran it; they are recorded in every
record and folded into `run_key`, which is what resume uses to skip finished work.

Each backend owns the options it reads (`backends.base.BACKEND_OPTIONS`); `for_backend` sets the rest to
None (not applicable), so an ONNX Runtime record carries no KV-cache type it never used, and neither id
changes with a setting its backend ignores.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

from edgeprof.errors import ConfigError
from edgeprof.quant import KV_CACHE_TYPES

SAMPLERS = ("greedy", "none")
GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")
FLASH_ATTN = ("auto", "on", "off")


@dataclass(frozen=True)
class Hyperparameters:
    """Everything a backend needs to run one configuration. Lengths are in tokens."""

    batch: int = 1  # independent sequences decoded together
    prompt_tokens: int = 128
    gen_tokens: int = 64  # decode steps after the prompt (as llama-bench's -n)
    context: int = 0  # per-sequence context; 0 = prompt_tokens + gen_tokens
    kv_type: str | None = "f16"  # llama.cpp
    sampler: str = "greedy"  # "none" feeds tokens back without reading logits, like llama-bench
    threads: int = 0  # 0 = physical cores
    gpu_layers: int | None = 0  # llama.cpp
    n_batch: int | None = 2048  # llama.cpp: logical batch, tokens per llama_decode call in prefill
    n_ubatch: int | None = 512  # llama.cpp: physical micro-batch
    flash_attn: str | None = "auto"  # llama.cpp
    provider: str | None = "cpu"  # ONNX Runtime execution provider (cpu, cuda, tensorrt, coreml, ...)
    graph_opt: str | None = "all"  # ONNX Runtime graph optimization level
    depth: int = 0  # tokens already in each sequence's KV cache before the timed prompt (llama-bench's -d)
    power_mode: str | None = None  # Jetson nvpmodel mode set before the configuration (None: as found)

    WORKLOAD = ("batch", "prompt_tokens", "gen_tokens", "context", "kv_type", "sampler", "depth")
    # How a device ran the workload: shown beside each side of a comparison, never part of what joins.
    EXECUTION = ("threads", "gpu_layers", "n_batch", "n_ubatch", "flash_attn", "provider", "graph_opt", "power_mode")
    LATER = {"depth": 0, "power_mode": None}
    """Fields added after ids were first published: at these values they stay out of both ids, so a run
    made before them still joins (and resumes) with one made after."""

    @property
    def context_per_sequence(self) -> int:
        return self.context or self.depth + self.prompt_tokens + self.gen_tokens

    def for_backend(self, options: tuple[str, ...]) -> "Hyperparameters":
        """These settings with every field outside `options` (what the backend reads) set to None."""
        return replace(self, **{f.name: None for f in fields(self) if f.name not in options})

    def validate(self) -> "Hyperparameters":
        """Raise `ConfigError` with one line for settings that cannot run (None: not this backend's)."""
        for name in ("batch", "prompt_tokens", "n_batch", "n_ubatch"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be > 0, got {getattr(self, name)}")
        for name in ("gen_tokens", "context", "threads", "depth"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be >= 0, got {getattr(self, name)}")
        if self.gpu_layers is not None and self.gpu_layers < -1:
            raise ConfigError(f"gpu layers must be -1 (all) or >= 0, got {self.gpu_layers}")
        if self.context and self.depth + self.prompt_tokens + self.gen_tokens > self.context:
            held = f"depth ({self.depth}) + " if self.depth else ""
            raise ConfigError(f"{held}prompt ({self.prompt_tokens}) + generated ({self.gen_tokens}) tokens exceed "
                              f"the context of {self.context}; raise --context or shorten them")
        if self.kv_type is not None and self.kv_type not in KV_CACHE_TYPES:
            raise ConfigError(f"unknown KV-cache type {self.kv_type!r} (offered: {', '.join(KV_CACHE_TYPES)})")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r} (offered: {', '.join(SAMPLERS)})")
        if self.flash_attn is not None and self.flash_attn not in FLASH_ATTN:
            raise ConfigError(f"flash attention must be one of {', '.join(FLASH_ATTN)}, got {self.flash_attn!r}")
        if self.graph_opt is not None and self.graph_opt not in GRAPH_OPT_LEVELS:
            raise ConfigError(f"graph optimization must be one of {', '.join(GRAPH_OPT_LEVELS)}, got {self.graph_opt!r}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Hyperparameters":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def workload(self) -> dict:
        """What is computed, for config ids: the workload fields this backend uses."""
        data = self.to_dict()
        data["context"] = self.context_per_sequence
        return {k: data[k] for k in self.WORKLOAD if data[k] is not None and not self._later_default(k, data[k])}

    def _later_default(self, name: str, value) -> bool:
        return name in self.LATER and value == self.LATER[name]

    def id_fields(self) -> dict:
        """Every setting, less the later fields at their defaults (see `LATER`): what `run_key` hashes."""
        return {k: v for k, v in self.to_dict().items() if not self._later_default(k, v)}


def _short_hash(payload: object) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def config_id(model: str, quant: str, backend: str, hp: Hyperparameters) -> str:
    """Hash of model + quant + backend + workload: equal across devices for the same work."""
    return _short_hash({"model": model, "quant": quant, "backend": backend, "workload": hp.workload()})


_EXECUTION_WORDS = {"threads": "threads", "gpu_layers": "GPU layers", "n_ubatch": "ubatch", "flash_attn": "flash",
                    "provider": "provider", "graph_opt": "graph opt", "power_mode": "power mode"}


def execution_settings(settings: dict, options: tuple[str, ...] | None = None) -> str:
    """How a device ran a configuration, in a few words (`threads 2 · GPU layers 0 · flash auto`), from a
    record's hyperparameters or a summary row; settings its backend does not have (None, or outside the
    backend's `options` for records older than per-backend settings) are left out."""
    return " · ".join(f"{word} {settings[key]}" for key, word in _EXECUTION_WORDS.items()
                      if settings.get(key) is not None and (options is None or key in options))


def workload_id(artifact: str, backend: str, hp: Hyperparameters, keep: tuple[str, ...] | None = None) -> str:
    """What was run, for joining runs across devices: the artifact's identity (its sha256 where known, else
    model name and quantization) + backend + the workload, never how a device ran it (threads, GPU layers,
    provider). `keep` names the only workload fields that count (a loose join: batch, prompt and gen)."""
    workload = hp.workload()
    if keep is not None:
        workload = {k: workload[k] for k in keep if k in workload}
    return _short_hash({"artifact": artifact, "backend": backend, "workload": workload})


def run_key(config: str, hp: Hyperparameters) -> str:
    """Hash of the config id and every execution setting: equal only for the exact same run."""
    return _short_hash({"config_id": config, "hyperparameters": hp.id_fields()})
