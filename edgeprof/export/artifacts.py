"""Exported files and their sidecars, kept in a content-addressed cache.

An artifact's cache key hashes the source's identity, the format, the quantization and the exporter
version, so the same request reuses the same file and a changed source gets a new one. The sidecar
(`<file>.json`) says where the file came from and lets anyone check it (bytes, sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeprof import __version__
from edgeprof.paths import cache_root, ensure_writable_dir

# ONNX model metadata saying past_key_values.* and present.* may be bound to one preallocated buffer: the
# exporter writes it and the backend reads it, so it belongs to the artifact, not to either of them.
KV_CACHE_METADATA = "edgeprof.kv_cache"

SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class Artifact:
    """A runnable model file and what is known about it."""

    path: str
    format: str  # "gguf" or "onnx"
    quant: str
    source: str  # the model's stable name, e.g. synth:smollm2-135m
    bytes: int  # all payload files together (an ONNX graph plus its external data)
    sha256: str
    exporter: str  # e.g. edgeprof-0.1.0/llama.cpp-quantize
    created: str
    imatrix: str = ""  # the importance matrix a calibrated quantization used: "<file sha256> <text sha256> <text>"

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
        if not file.exists() or _payload_bytes(file) != artifact.bytes:
            return None
        return artifact


def _payload_bytes(file: Path) -> int:
    """Size of a model file plus its ONNX external-data file, the same sum `describe_files` stores."""
    data = file.with_name(file.name + ".data")
    return file.stat().st_size + (data.stat().st_size if file.suffix == ".onnx" and data.exists() else 0)


def sha256_of(*paths: Path, chunk: int = 1 << 22) -> str:
    """One sha256 over the files in order (for ONNX: the graph, then its external data)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                digest.update(block)
    return digest.hexdigest()


def describe(path: Path, fmt: str, quant: str, source: str, exporter: str, imatrix: str = "") -> Artifact:
    """Measure a finished single-file artifact and record its sidecar."""
    return describe_files(path, [path], fmt, quant, source, exporter, imatrix)


def describe_files(path: Path, files: list[Path], fmt: str, quant: str, source: str, exporter: str,
                   imatrix: str = "") -> Artifact:
    """Measure an artifact made of `files` (path first) and record its sidecar beside `path`.
    `imatrix`: what calibrated it (importance matrix or calibration text), "" for none."""
    artifact = Artifact(
        path=str(path), format=fmt, quant=quant, source=source, bytes=sum(f.stat().st_size for f in files),
        sha256=sha256_of(*files), exporter=exporter, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        imatrix=imatrix,
    )
    artifact.write_sidecar()
    return artifact


def artifact_path(source_key: str, source_name: str, fmt: str, quant: str, file_name: str = "") -> Path:
    """Where an artifact for this request lives in the cache (its parent folder is created).

    GGUF artifacts share one folder per source; an ONNX variant (`file_name` given) gets a folder of its
    own, because it is a graph plus an external-data file plus the config optimum needs."""
    key = json.dumps([source_key, fmt, quant, __version__], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe_name = source_name.replace(":", "-").replace("/", "-").replace("@", "-")
    folder = ensure_writable_dir(cache_root() / "artifacts" / fmt / f"{safe_name}-{digest}", "artifact cache")
    return folder / quant / file_name if file_name else folder / f"{safe_name}.{quant}.{fmt}"


def partial_path(final: Path) -> Path:
    """A sibling path to write into before an atomic rename, so a killed export leaves no half file."""
    return final.with_name(final.name + f".partial-{os.getpid()}")


def user_file_artifact(files: list[Path], source_name: str, fmt: str, quant_of: Callable[[], str]) -> Artifact:
    """Describe a user's model file (`files[0]`, plus any data files) once: the hash and quantization
    (`quant_of`, called only on a miss) are remembered in our cache, keyed by path, size and mtime, never
    written beside the user's file."""
    stamp = ";".join(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    memo = artifact_path(stamp, source_name, fmt, "memo").with_suffix(".json")
    try:
        return Artifact(**json.loads(memo.read_text()))
    except (OSError, ValueError, TypeError):
        pass
    artifact = Artifact(path=str(files[0]), format=fmt, quant=quant_of(), source=source_name,
                        bytes=sum(f.stat().st_size for f in files), sha256=sha256_of(*files),
                        exporter="user-supplied", created="")
    memo.write_text(json.dumps(asdict(artifact)))
    return artifact


def copy_artifact_out(artifact: Artifact, out: Path) -> Path:
    """Copy an artifact and its sidecar out of the cache into `out`; an ONNX variant keeps its folder (graph,
    data, config) under out/<quant>/ so optimum and edgeprof can both load it from there."""
    path = Path(artifact.path)
    if artifact.format == "onnx":
        target = out / artifact.quant
        shutil.copytree(path.parent, target, dirs_exist_ok=True)
        return target / path.name
    shutil.copy2(path, out / path.name)
    shutil.copy2(str(path) + SIDECAR_SUFFIX, out / (path.name + SIDECAR_SUFFIX))
    return out / path.name
