"""Create a run directory and its manifest (what ran, where, with which software)."""

from __future__ import annotations

import json
import platform
import secrets
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgeprof import __version__
from edgeprof.paths import ensure_writable_dir
from edgeprof.results.records import RecordWriter

_LIBRARIES = ("llama-cpp-python", "gguf", "numpy", "onnxruntime", "psutil", "typer", "rich")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@dataclass
class RunDir:
    path: Path
    run_id: str

    @property
    def records_path(self) -> Path:
        return self.path / "records.jsonl"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.csv"

    def writer(self) -> RecordWriter:
        return RecordWriter(self.records_path)

    def write_manifest(self, manifest: dict) -> None:
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        tmp.replace(self.manifest_path)


def create_run_dir(parent: Path) -> RunDir:
    """A fresh `<parent>/<date>-<time>-<random>` folder; an unwritable parent is an `OutputError`."""
    ensure_writable_dir(parent, "output folder")
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    path = parent / run_id
    path.mkdir()
    return RunDir(path, run_id)


def base_manifest(run_id: str, device: dict) -> dict:
    return {
        "run_id": run_id,
        "command": sys.argv,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "edgeprof_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": library_versions(),
        "device": device,
    }


def read_manifest(run_dir: Path) -> dict:
    """A run directory's manifest, or a one-line `ConfigError` saying why it is not one."""
    from edgeprof.errors import ConfigError

    path = Path(run_dir) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{run_dir}: not a run directory (no manifest.json)") from None
    except ValueError:
        raise ConfigError(f"{path}: not readable JSON") from None
