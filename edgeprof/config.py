"""Hyperparameters of one benchmark configuration, their validation and the ids that join runs.

Fields split in two. *Workload* fields (batch, lengths, context, KV type, sampler) define what is
computed; together with model, quantization and backend they make the `config_id`, identical on every
device, so an edge run and a server run of the same workload join on it. *Execution* fields (threads,
GPU layers, micro-batch sizes, flash attention) say how a device ran it; they are recorded in every
record and folded into `run_key`, which is what resume uses to skip finished work.

`Hyperparameters` holds what every backend reads; each backend owns its own settings as an options
dataclass in its folder (`backends/llamacpp/options.py`, `backends/onnxruntime/options.py`, a subclass of
`BackendOptions`), and a configuration carries them by name in `options`. `for_backend` keeps only the
backend's own (its defaults filled in) and marks the rest not applicable (None), so an ONNX Runtime record
carries no KV-cache type it never used, and neither id changes with a setting its backend ignores.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any

from edgeprof.errors import ConfigError

SAMPLERS = ("greedy", "none")

RECORDED_DEFAULTS: dict[str, Any] = {"kv_type": "f16", "gpu_layers": 0, "n_batch": 2048, "n_ubatch": 512,
                                     "flash_attn": "auto", "provider": "cpu", "graph_opt": "all"}
"""The built-in backends' settings as records have always listed them, with the values a configuration held
when none was given (the same as `LlamaCppOptions` and `OnnxRuntimeOptions` default to; a test holds them
equal). Every record names each (None where its backend has no such setting), so the records and the ids
made before backends became plug-ins stay exactly as they were. A new backend's settings never join this."""
RECORDED_OPTIONS = tuple(RECORDED_DEFAULTS)


@dataclass(frozen=True)
class BackendOptions:
    """Base of a backend's options dataclass: the settings only that backend reads, with their defaults.
    They are execution settings (how a device ran the workload: in `run_key`, never in `config_id`); a
    setting that changes what is computed belongs in `Hyperparameters.WORKLOAD`, where llama.cpp's KV-cache
    type has been since before backends were plug-ins."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    @classmethod
    def of(cls, hp: "Hyperparameters") -> "BackendOptions":
        """This backend's settings in `hp`, its defaults where `hp` names none (typed: what a session reads)."""
        given = {k: v for k, v in hp.options if k in cls.names() and v is not None}
        return cls(**{**cls.defaults(), **given})  # a recorded setting at its default is not in hp.options

    def validate(self) -> "BackendOptions":
        """Raise `ConfigError` with one line for a setting that cannot run."""
        return self



@dataclass(frozen=True, init=False)
class Hyperparameters:
    """Everything a backend needs to run one configuration. Lengths are in tokens.

    Built as before (`Hyperparameters(batch=4, gpu_layers=-1)`): a keyword that is not a common field is a
    backend's setting and lands in `options`; `hp.gpu_layers` reads it back (its recorded default where none
    was given, None where the configuration's backend has no such setting)."""

    batch: int = 1  # independent sequences decoded together
    prompt_tokens: int = 128
    gen_tokens: int = 64  # decode steps after the prompt (as llama-bench's -n)
    context: int = 0  # per-sequence context; 0 = prompt_tokens + gen_tokens
    sampler: str = "greedy"  # "none" feeds tokens back without reading logits, like llama-bench
    threads: int = 0  # 0 = physical cores
    depth: int = 0  # tokens already in each sequence's KV cache before the timed prompt (llama-bench's -d)
    power_mode: str | None = None  # Jetson nvpmodel mode set before the configuration (None: as found)
    options: tuple[tuple[str, Any], ...] = ()  # the backend's own settings, (name, value) sorted; None: not its

    WORKLOAD = ("batch", "prompt_tokens", "gen_tokens", "context", "kv_type", "sampler", "depth")
    # How a device ran the workload: shown beside each side of a comparison, never part of what joins.
    EXECUTION = ("threads", "gpu_layers", "n_batch", "n_ubatch", "flash_attn", "provider", "graph_opt", "power_mode")
    LATER = {"depth": 0, "power_mode": None}
    """Fields added after ids were first published: at these values they stay out of both ids, so a run
    made before them still joins (and resumes) with one made after."""

    def __init__(self, batch: int = 1, prompt_tokens: int = 128, gen_tokens: int = 64, context: int = 0,
                 sampler: str = "greedy", threads: int = 0, depth: int = 0, power_mode: str | None = None,
                 options: tuple[tuple[str, Any], ...] | dict = (), **settings: Any):
        common = {"batch": batch, "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "context": context,
                  "sampler": sampler, "threads": threads, "depth": depth, "power_mode": power_mode}
        for name, value in common.items():
            object.__setattr__(self, name, value)
        merged = {**dict(options), **settings}
        # a recorded setting at its default is the same as none given (so equal settings compare equal);
        # None means the configuration's backend has no such setting
        object.__setattr__(self, "options", tuple(sorted(
            (k, v) for k, v in merged.items() if k not in RECORDED_DEFAULTS or v is None or v != RECORDED_DEFAULTS[k])))

    def __getattr__(self, name: str):
        """A backend's setting by name: its value, or None where this configuration's backend has none."""
        if name.startswith("_"):
            raise AttributeError(name)
        for key, value in self.__dict__.get("options", ()):
            if key == name:
                return value
        if name in RECORDED_DEFAULTS:
            return RECORDED_DEFAULTS[name]
        raise AttributeError(f"{type(self).__name__} has no setting {name!r}")

    @property
    def context_per_sequence(self) -> int:
        return self.context or self.depth + self.prompt_tokens + self.gen_tokens

    def for_backend(self, options: type[BackendOptions]) -> "Hyperparameters":
        """These settings for a backend whose own settings are `options`: its settings (defaults where none
        is given), every other backend's left out (None: not applicable)."""
        own = options.of(self)
        not_applicable = {name: None for name in RECORDED_OPTIONS if name not in options.names()}
        return replace(self, options={**not_applicable, **{f.name: getattr(own, f.name) for f in fields(own)}})

    def validate(self) -> "Hyperparameters":
        """Raise `ConfigError` with one line for shared settings that cannot run (a backend's own settings
        are its options dataclass's to check: `BackendOptions.validate`)."""
        for name in ("batch", "prompt_tokens"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be > 0, got {getattr(self, name)}")
        for name in ("gen_tokens", "context", "threads", "depth"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be >= 0, got {getattr(self, name)}")
        if self.context and self.depth + self.prompt_tokens + self.gen_tokens > self.context:
            held = f"depth ({self.depth}) + " if self.depth else ""
            raise ConfigError(f"{held}prompt ({self.prompt_tokens}) + generated ({self.gen_tokens}) tokens exceed "
                              f"the context of {self.context}; raise --context or shorten them")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {self.sampler!r} (offered: {', '.join(SAMPLERS)})")
        return self

    def to_dict(self) -> dict:
        """Flat, as records carry it: the shared fields, every recorded backend setting (None where not
        applicable) and the backend's own."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "options"}
        return {**data, **{name: getattr(self, name) for name in RECORDED_OPTIONS}, **dict(self.options)}

    @classmethod
    def from_dict(cls, data: dict, options: tuple[str, ...] = ()) -> "Hyperparameters":
        """From a record's (or a summary row's) flat settings: the shared fields, the recorded backend
        settings and the names in `options` (a plug-in backend's own); anything else is ignored."""
        common = {f.name for f in fields(cls)} - {"options"}
        settings = {k: v for k, v in data.items() if k in RECORDED_OPTIONS or k in options}
        return cls(**{k: v for k, v in data.items() if k in common}, options=settings)

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
