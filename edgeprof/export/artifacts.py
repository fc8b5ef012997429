"""Exported files and their sidecars, kept in a content-addressed cache.

An artifact's cache key hashes the source's identity, the format, the quantization and the exporter
version, so the same request reuses the same file and a changed source gets a new one. The sidecar
(`<file>.json`) says where the file came from and lets anyone check it (bytes, sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeprof import __version__
from edgeprof.paths import cache_root, ensure_writable_dir

SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class Artifact:
    """A runnable model file and what is known about it."""

    path: str
    format: str  # "gguf" (later: "onnx")
    quant: str
    source: str  # the model's stable name, e.g. synth:smollm2-135m
    bytes: int
    sha256: str
    exporter: str  # e.g. edgeprof-0.1.0/llama.cpp-quantize
    created: str

    def write_sidecar(self) -> None:
        Path(self.path + SIDECAR_SUFFIX).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read_sidecar(cls, file: Path) -> "Artifact | None":
        """The sidecar of `file` if it exists and still describes the file's size."""
        sidecar = Path(str(file) + SIDECAR_SUFFIX)
        try:
            data = json.loads(sidecar.read_text())
            artifact = cls(**data)
        except (OSError, ValueError, TypeError):
            return None
        if not file.exists() or file.stat().st_size != artifact.bytes:
            return None
        return artifact


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe(path: Path, fmt: str, quant: str, source: str, exporter: str) -> Artifact:
    """Measure a finished file and record its sidecar."""
    artifact = Artifact(
        path=str(path), format=fmt, quant=quant, source=source, bytes=path.stat().st_size,
        sha256=sha256_of(path), exporter=exporter, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    artifact.write_sidecar()
    return artifact


def artifact_path(source_key: str, source_name: str, fmt: str, quant: str) -> Path:
    """Where an artifact for this request lives in the cache (the folder is created)."""
    key = json.dumps([source_key, fmt, quant, __version__], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe_name = source_name.replace(":", "-").replace("/", "-").replace("@", "-")
    folder = ensure_writable_dir(cache_root() / "artifacts" / fmt / f"{safe_name}-{digest}", "artifact cache")
    return folder / f"{safe_name}.{quant}.{fmt}"


def partial_path(final: Path) -> Path:
    """A sibling path to write into before an atomic rename, so a killed export leaves no half file."""
    return final.with_name(final.name + f".partial-{os.getpid()}")
