"""Expand lists of models, quantizations, backends and hyperparameters into configurations.

Like llama-bench, every option may hold several values and the run is their cartesian product.
Everything is validated here, before anything runs, so bad input fails fast with one line.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

from edgeprof.config import Hyperparameters
from edgeprof.errors import BackendUnavailableError, ConfigError
from edgeprof.export.gguf_check import check_gguf
from edgeprof.export.gguf_export import gguf_quant
from edgeprof.source import ModelSource, resolve

BACKENDS = ("llama.cpp",)


@dataclass(frozen=True)
class BenchConfig:
    """One configuration: a model at a quantization on a backend with hyperparameters."""

    source: ModelSource
    quant: str
    backend: str
    hp: Hyperparameters

    @property
    def label(self) -> str:
        hp = self.hp
        return (f"{self.source.name} {self.quant} {self.backend} b{hp.batch} p{hp.prompt_tokens} "
                f"g{hp.gen_tokens} t{hp.threads}")


def default_threads() -> int:
    """Physical cores, as llama-bench uses by default."""
    from edgeprof.devices import host_facts

    return host_facts().physical_cores


def require_gpu_offload() -> None:
    """GPU layers need a llama.cpp built with a GPU backend; say how to get one instead of failing later."""
    from edgeprof.backends.llamacpp_lib import build_info

    if not build_info()["gpu_offload"]:
        raise BackendUnavailableError(
            "--gpu-layers needs llama-cpp-python built with GPU support; this build is CPU-only. Reinstall with "
            "CMAKE_ARGS=\"-DGGML_CUDA=on\" pip install --force-reinstall --no-cache-dir llama-cpp-python "
            "(see scripts/gpu/README.md), or use --gpu-layers 0")


def expand(models: list[str], quants: list[str], backends: list[str],
           grid: dict[str, list]) -> list[BenchConfig]:
    """The validated cartesian product. `grid` maps Hyperparameters field names to lists of values."""
    if not models:
        raise ConfigError("no model given")
    sources = [resolve(spec) for spec in dict.fromkeys(models)]
    for source in sources:
        if source.is_gguf:
            check_gguf(source.path)  # a wrong or truncated file is the user's input: fail before running
    for backend in backends:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r} (available: {', '.join(BACKENDS)})")
    quant_names = [gguf_quant(q).name for q in dict.fromkeys(quants)]
    keys = list(grid)
    if "llama.cpp" in backends and any(layers != 0 for layers in grid.get("gpu_layers", [0])):
        require_gpu_offload()
    configs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        hp = Hyperparameters(**dict(zip(keys, values))).validate()
        if hp.threads == 0:
            hp = replace(hp, threads=default_threads())
        for source, backend in itertools.product(sources, backends):
            # A GGUF file given directly is run as it is: its quantization is the file's own.
            for quant in (["as-is"] if source.is_gguf else quant_names):
                configs.append(BenchConfig(source, quant, backend, hp))
    return configs
