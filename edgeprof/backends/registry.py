"""The backends edgeprof can run, each a plug-in: one place that says what a backend is.

A backend is a package (`edgeprof/backends/<name>/`) whose `__init__` defines `BACKEND`, a `Backend`:
its name, the artifact format it reads, its options dataclass, its quantization table, and the entry
points the rest of edgeprof calls (session, operator profiler, exporter, file check, the files a fleet
ships, ...). Everything that used to compare backend or format names asks this module instead, so adding
a backend touches only its own folder and `BUILTIN` below.

Packages are imported by name when first asked, never at edgeprof's import: a backend's entry points
import their native library (llama_cpp, onnxruntime, torch) inside the call, so `edgeprof --help` loads
none of them. `EDGEPROF_BACKENDS` (module names, comma-separated) adds backends from outside edgeprof;
worker and export processes inherit it, so a plug-in runs in them too.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeprof.config import BackendOptions, Hyperparameters
from edgeprof.errors import ConfigError
from edgeprof.quant.table import QuantTable

if TYPE_CHECKING:
    import numpy as np

    from edgeprof.backends.op_profile import OpProfile
    from edgeprof.export.artifacts import Artifact

BUILTIN = ("edgeprof.backends.llamacpp", "edgeprof.backends.onnxruntime")
PLUGINS_ENV = "EDGEPROF_BACKENDS"
COMMON_OPTIONS = tuple(f.name for f in fields(Hyperparameters) if f.name != "options")
"""The Hyperparameters fields every backend reads (each backend adds its options dataclass's fields)."""


@dataclass(frozen=True)
class Target:
    """What planning needs to know of the machine that will run the configurations, when that is not this
    host (a fleet's head expands a sweep for each of its devices): its physical cores (threads 0), whether
    its llama.cpp offloads to a GPU, and the ONNX Runtime providers it offers."""

    physical_cores: int
    gpu_offload: bool
    ort_providers: tuple[str, ...]


def _nothing(*_args: Any) -> None:
    return None


def _on_cpu(_hp: Hyperparameters) -> bool:
    return False


@dataclass(frozen=True)
class Backend:
    """One backend as it registers itself. Entry points import heavy libraries inside the call."""

    name: str  # as records and the CLI say it, e.g. "llama.cpp"
    format: str  # the artifact format it reads, e.g. "gguf" (a `ModelSource.kind` for users' files)
    options: type[BackendOptions]  # the settings only it reads, with their defaults and validation
    quants: QuantTable  # the quantizations its format offers
    open_session: Callable[[str, Hyperparameters, bool], Any]  # (model path, hp, need_logits) -> base.BackendSession
    profile_ops: Callable[[str, Hyperparameters, np.ndarray], OpProfile]  # (model path, hp, prompts)
    export: Callable[..., Artifact]  # (source, quant, progress=, calibration_text=): made or found in the cache
    parent_quant: Callable[[Any, str], str | None]  # (source, quant): the unquantized one fidelity compares with
    check_file: Callable[[Path], dict]  # a user's file before a native loader sees it: its metadata, or raises
    shipped_files: Callable[[Artifact], list[Path]]  # what a fleet device needs of an artifact (model file first)
    uses_gpu: Callable[[Hyperparameters], bool] = _on_cpu  # whether a configuration runs on a GPU
    check_grid: Callable[[dict, Target | None], None] = _nothing  # refuse settings the machine cannot run
    prepare_worker: Callable[[], None] = _nothing  # first thing in a process that loads models
    windowed_kv_cache: bool = False  # sliding-window layers keep a window-sized cache (llama.cpp), not the context
    aliases: tuple[str, ...] = ()  # other names users type (`ort`, `llamacpp`)
    label: str = ""  # the format in words for messages ("GGUF"); default: the format upper-cased

    @property
    def format_label(self) -> str:
        return self.label or self.format.upper()

    @property
    def option_names(self) -> tuple[str, ...]:
        """Every Hyperparameters field this backend reads (the grid expands per backend over these)."""
        return COMMON_OPTIONS + self.options.names()


def _modules() -> tuple[str, ...]:
    extra = tuple(m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip())
    return BUILTIN + tuple(m for m in extra if m not in BUILTIN)


@functools.cache
def _load(modules: tuple[str, ...]) -> dict[str, Backend]:
    found: dict[str, Backend] = {}
    for module in modules:
        try:
            backend = importlib.import_module(module).BACKEND
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"backend module {module!r} ({PLUGINS_ENV}) cannot be loaded: {exc}") from None
        found[backend.name] = backend
    return found


def backends() -> dict[str, Backend]:
    """Every registered backend by name, built-in ones first."""
    return _load(_modules())


def names() -> tuple[str, ...]:
    return tuple(backends())


def get(name: str) -> Backend:
    """The backend called `name` or one of its aliases (any case); unknown names are a one-line error."""
    wanted = name.lower()
    for backend in backends().values():
        if wanted == backend.name.lower() or wanted in backend.aliases:
            return backend
    raise ConfigError(f"unknown backend {name!r} (available: {', '.join(names())})")


def canonical_backend(name: str) -> str:
    """`ort` -> `onnxruntime`, `llamacpp` -> `llama.cpp`; unknown names are a one-line error."""
    return get(name).name


def for_format(fmt: str) -> Backend:
    """The (first registered) backend that reads artifacts of `fmt`."""
    for backend in backends().values():
        if backend.format == fmt:
            return backend
    raise ConfigError(f"no backend reads {fmt!r} artifacts (formats: {', '.join(formats())})")


def formats() -> tuple[str, ...]:
    return tuple(dict.fromkeys(b.format for b in backends().values()))


def option_names() -> tuple[str, ...]:
    """Every setting a sweep may name: the shared fields and each backend's own."""
    return tuple(dict.fromkeys(name for b in backends().values() for name in b.option_names))


def uses_gpu(backend: str, hp: Hyperparameters) -> bool:
    """Whether a configuration runs on a GPU (llama.cpp with layers offloaded, ONNX Runtime on a GPU provider)."""
    return get(backend).uses_gpu(hp)


def open_session(backend: str, model_path: str, hp: Hyperparameters, need_logits: bool = False):
    """A session of `backend` on `model_path`. `need_logits`: the caller reads logits (fidelity, parity), so
    sampling must not move them off the host, and an ONNX graph gives them for every position. Returns a
    `base.BackendSession` (not imported here: `base` re-exports this function)."""
    return get(backend).open_session(model_path, hp, need_logits)
