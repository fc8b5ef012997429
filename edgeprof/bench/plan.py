"""Expand lists of models, quantizations, backends and hyperparameters into configurations.

Like llama-bench, every option may hold several values and the run is their cartesian product.
Everything is validated here, before anything runs, so bad input fails fast with one line.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, replace

from edgeprof.backends import registry
from edgeprof.backends.registry import Target  # noqa: F401 - planning's machine description, imported from here
from edgeprof.config import Hyperparameters
from edgeprof.errors import ConfigError
from edgeprof.export.in_child import check_model_file
from edgeprof.models.source import ModelSource, resolve


@dataclass(frozen=True)
class BenchConfig:
    """One configuration: a model at a quantization on a backend with hyperparameters."""

    source: ModelSource
    quant: str
    backend: str
    hp: Hyperparameters
    skip: str = ""  # why this combination cannot run (recorded as a "skipped" record, not run)

    @property
    def format(self) -> str:
        return registry.get(self.backend).format

    @property
    def windowed_kv_cache(self) -> bool:
        """Whether the backend keeps a window-sized cache on sliding-window layers (the memory fit reads it)."""
        return registry.get(self.backend).windowed_kv_cache

    @property
    def label(self) -> str:
        hp = self.hp
        return (f"{self.source.name} {self.quant} {self.backend} b{hp.batch} p{hp.prompt_tokens} "
                f"g{hp.gen_tokens}{f' d{hp.depth}' if hp.depth else ''} t{hp.threads}"
                f"{f' {hp.power_mode}' if hp.power_mode else ''}")


def default_threads() -> int:
    """Physical cores, as llama-bench uses by default."""
    from edgeprof.hardware.devices import host_facts

    return host_facts().physical_cores


def backend_quant(quant: str, backend: str) -> tuple[str, str]:
    """(canonical quant name, "") for a quantization this backend's format offers, else ("", why not)."""
    chosen = registry.get(backend)
    if chosen.quants.offers(quant):
        return chosen.quants.canonical(quant), ""
    others = [b.format_label for b in registry.backends().values() if b.format != chosen.format and b.quants.offers(quant)]
    what = f"{'an' if others[0][0] in 'AEIOU' else 'a'} {others[0]}" if others else f"not a {chosen.format_label}"
    return "", f"{quant} is {what} quantization; {backend} does not run it"


def _check_quants(quants: list[str], backends: list[str]) -> None:
    """A name no chosen backend knows is a typo: one line listing what each backend offers."""
    for quant in quants:
        if not any(backend_quant(quant, backend)[0] for backend in backends):
            registry.get(backends[0]).quants.lookup(quant)  # raises the QuantError that lists the offered names


def _file_skip(source: ModelSource, backend: str) -> str:
    reads = registry.get(backend)
    if source.kind == reads.format:
        return ""
    return f"{source.spec} is a {source.kind.upper()} file; {backend} reads {reads.format_label}"


def trained_context(source: ModelSource, gguf_metadata: dict | None = None) -> int | None:
    """Tokens per sequence the model was trained for: the HF config's max_position_embeddings (presets
    and folders), the GGUF's `<arch>.context_length`, or an ONNX export's config.json; None if unknown."""
    if source.architecture is not None:
        return source.architecture.max_position_embeddings
    if gguf_metadata is not None:
        value = gguf_metadata.get(f"{gguf_metadata.get('general.architecture')}.context_length")
        return int(value) if value else None
    if source.is_file:  # a file without such metadata (ONNX) has the HF config beside it, if anything
        config = source.path.parent / "config.json"
        try:
            value = json.loads(config.read_text()).get("max_position_embeddings")
        except (OSError, ValueError):
            return None
        return int(value) if value else None
    return None


def _check_context(source: ModelSource, trained: int | None, hp: Hyperparameters, allow_long_context: bool) -> None:
    """Past its trained context a model's positions are out of distribution, and a typo such as
    --prompt 100000 would run silently for minutes: refuse unless the user asked for it."""
    if trained is None or allow_long_context or hp.context_per_sequence <= trained:
        return
    raise ConfigError(f"{source.spec}: {f'depth ({hp.depth}) + ' if hp.depth else ''}prompt ({hp.prompt_tokens}) + "
                      f"generated ({hp.gen_tokens}) tokens need a "
                      f"context of {hp.context_per_sequence}, beyond the model's trained context of {trained}; "
                      "shorten them, or pass --allow-long-context to run past it")


def expand(models: list[str], quants: list[str], backends: list[str],
           grid: dict[str, list], allow_long_context: bool = False, target: Target | None = None) -> list[BenchConfig]:
    """The validated cartesian product. `grid` maps Hyperparameters field names to lists of values;
    `target` describes the machine that will run them (default: this host).

    Combinations a backend cannot run (a GGUF quantization on ONNX Runtime, an ONNX file on llama.cpp)
    come back with `skip` set, so the run records why they were left out."""
    if not models:
        raise ConfigError("no model given")
    chosen = [registry.get(b) for b in dict.fromkeys(backends)]
    backends = list(dict.fromkeys(b.name for b in chosen))
    sources = [resolve(spec) for spec in dict.fromkeys(models)]
    trained: dict[str, int | None] = {}
    for source in sources:
        metadata = None
        if source.is_file:  # a wrong or truncated file is the user's input: fail before running, in a child
            metadata = check_model_file(source.path, source.kind) or None
        trained[source.spec] = trained_context(source, metadata)
    _check_quants(list(dict.fromkeys(quants)), backends)
    keys = list(grid)
    unknown = [k for k in keys if k not in registry.option_names()]
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} (known: {', '.join(sorted(registry.option_names()))})")
    for backend in dict.fromkeys(chosen):
        backend.check_grid(grid, target)  # what this machine (or the fleet device) cannot run, before anything runs
    configs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        full = Hyperparameters(**dict(zip(keys, values))).validate()
        for backend in dict.fromkeys(chosen):
            backend.options.of(full).validate()  # each backend checks its own settings (one line each)
        if full.threads == 0:
            full = replace(full, threads=target.physical_cores if target else default_threads())
        for source in sources:
            _check_context(source, trained[source.spec], full, allow_long_context)
        for source, backend in itertools.product(sources, backends):
            hp = full.for_backend(registry.get(backend).options)  # a setting it ignores makes no new config
            if source.is_file:  # a model file given directly is run as it is: its quantization is its own
                configs.append(BenchConfig(source, "as-is", backend, hp, _file_skip(source, backend)))
                continue
            for quant in dict.fromkeys(quants):
                name, why_not = backend_quant(quant, backend)
                configs.append(BenchConfig(source, name or quant, backend, hp, why_not))
    unique = {(c.source.spec, c.quant, c.backend, c.hp): c for c in configs}  # "f16" and "fp16" are one variant
    return list(unique.values())
