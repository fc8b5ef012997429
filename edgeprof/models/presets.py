"""Model presets: YAML files holding the HF config of a real model (see top-level `models/`)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from edgeprof.models.architecture import Architecture
from edgeprof.catalog import load_entries
from edgeprof.errors import CatalogError, EdgeprofError


@dataclass(frozen=True)
class Preset:
    """A named architecture, where its numbers came from, and how synth weights are stored."""

    name: str
    display_name: str
    source: str
    architecture: Architecture
    hf_config: dict
    synth_dtype: str
    path: Path


def _parse(name: str, data: dict, path: Path) -> Preset:
    config = data.get("config")
    if not isinstance(config, dict):
        raise CatalogError(f"{path}: a model preset needs a 'config' mapping of HF config fields")
    try:
        architecture = Architecture.from_hf_config(config)
    except EdgeprofError as exc:
        raise CatalogError(f"{path}: {exc}") from None
    dtype = str(data.get("synth_dtype", "float16"))
    if dtype not in ("float16", "float32"):
        raise CatalogError(f"{path}: synth_dtype must be float16 or float32, not {dtype!r}")
    return Preset(
        name=name,
        display_name=str(data.get("display_name", name)),
        source=str(data.get("source", "unknown")),
        architecture=architecture,
        hf_config=dict(config),
        synth_dtype=dtype,
        path=path,
    )


def list_presets() -> list[Preset]:
    """All presets, shipped and user-defined, sorted by parameter count."""
    presets = [_parse(name, data, path) for name, (data, path) in load_entries("models").items()]
    return sorted(presets, key=lambda p: p.architecture.parameter_count)


def get_preset(name: str) -> Preset:
    """One preset by name (case-insensitive); an unknown name suggests the closest ones."""
    entries = load_entries("models")
    by_lower = {key.lower(): key for key in entries}
    key = by_lower.get(name.lower())
    if key is None:
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else f" (known: {', '.join(sorted(entries))})"
        raise CatalogError(f"unknown model preset {name!r}{hint}")
    data, path = entries[key]
    return _parse(key, data, path)
