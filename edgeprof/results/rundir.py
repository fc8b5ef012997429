"""A run directory and its manifest (what ran, where, with which software, and how the run ended).

The manifest is a typed `Manifest` with a schema version. Version 2 (this one) added `schema_version`,
one shape for each `resumed` entry (`Resumption`: a local run wrote `partial_records_dropped`, a fleet
device `records_dropped`) and `ended` (why a run that did not complete ended, in one line). Older
manifests read as version 1 and are rewritten as version 2 when a run is resumed; keys this version
does not know (a newer edgeprof's) are kept as they were.
"""

from __future__ import annotations

import json
import platform
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path

from edgeprof import __version__
from edgeprof.errors import ConfigError
from edgeprof.paths import ensure_writable_dir
from edgeprof.results.records import RecordWriter

MANIFEST_SCHEMA_VERSION = 2
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
class Resumption:
    """One `--resume` of a run: configurations already finished, and records dropped before running the rest
    (partial repetitions of an interrupted configuration, `lost` records of a fleet device)."""

    finished_before: int
    records_dropped: int
    command: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> "Resumption":
        dropped = data.get("records_dropped", data.get("partial_records_dropped", 0))  # v1 local runs
        return cls(int(data.get("finished_before", 0)), int(dropped or 0), list(data.get("command") or []))


@dataclass
class Manifest:
    """manifest.json. Optional facts that a run does not have (no power modes, not a fleet run) are left out
    of the file rather than written as null, as before."""

    run_id: str
    device: dict
    command: list[str] = field(default_factory=lambda: list(sys.argv))
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    edgeprof_version: str = __version__
    python: str = field(default_factory=lambda: sys.version.split()[0])
    platform: str = field(default_factory=platform.platform)
    libraries: dict = field(default_factory=library_versions)
    device_profile: dict | None = None  # the profile in force, so analysis predicts it on any machine
    calibration: dict | None = None
    jetson: dict | None = None
    fleet: dict | None = None  # address, fleet id, device name, host (a fleet device's run)
    sweep: dict | None = None  # the SweepSpec: what --resume rebuilds the configurations from
    configurations: int | None = None
    sensors: dict | None = None
    artifacts: list[dict] = field(default_factory=list)
    power_modes: dict | None = None
    status: str = "running"  # running, complete, interrupted, or "incomplete: <why>"
    ended: str | None = None  # why the run stopped short of complete, one line
    resumed: list[Resumption] = field(default_factory=list)
    schema_version: int = MANIFEST_SCHEMA_VERSION
    extra: dict = field(default_factory=dict)  # keys this version does not know, written back as they were

    def to_dict(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "resumed")}
        data = {k: v for k, v in data.items() if v is not None}
        if self.resumed:
            data["resumed"] = [asdict(r) for r in self.resumed]
        return {**self.extra, **data}

    @classmethod
    def from_dict(cls, data: dict) -> "Manifest":
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        values["resumed"] = [Resumption.from_dict(r) for r in data.get("resumed") or []]
        values["schema_version"] = int(data.get("schema_version", 1))
        values.setdefault("device", {})
        values.setdefault("run_id", "")
        # a v1 manifest without these did not record them: never let defaults invent them (this host's now)
        for name in ("command", "started_at", "edgeprof_version", "python", "platform", "libraries"):
            values.setdefault(name, None)
        values.setdefault("status", None)
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def add_artifacts(self, artifacts: dict[str, dict]) -> None:
        """Artifacts used (path -> sidecar facts), merged with those listed before (a resumed run's)."""
        self.artifacts = list({**{a["path"]: a for a in self.artifacts}, **artifacts}.values())


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

    @property
    def samples_path(self) -> Path:
        return self.path / "samples.csv"

    @property
    def jobs_path(self) -> Path:
        return self.path / "jobs"

    def writer(self) -> RecordWriter:
        return RecordWriter(self.records_path)

    def write_manifest(self, manifest: Manifest | dict) -> None:
        data = manifest.to_dict() if isinstance(manifest, Manifest) else manifest
        tmp = self.manifest_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
        tmp.replace(self.manifest_path)

    def read_manifest(self) -> Manifest:
        return load_manifest(self.path)


def create_run_dir(parent: Path, run_id: str | None = None) -> RunDir:
    """A fresh `<parent>/<date>-<time>-<random>` folder (or `<parent>/<run_id>`); an unwritable parent is an
    `OutputError`."""
    ensure_writable_dir(parent, "output folder")
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    path = parent / run_id
    path.mkdir()
    return RunDir(path, run_id)


def open_run_dir(path: Path) -> tuple[RunDir, Manifest]:
    """An existing run directory and its manifest (any schema version), or one line saying why it is not one."""
    manifest = load_manifest(path)
    return RunDir(Path(path), manifest.run_id or Path(path).name), manifest


def load_manifest(run_dir: Path) -> Manifest:
    """A run directory's manifest, typed, or a one-line `ConfigError` saying why it is not one."""
    path = Path(run_dir) / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{run_dir}: not a run directory (no manifest.json)") from None
    except ValueError:
        raise ConfigError(f"{path}: not readable JSON") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a run manifest (a JSON object)")
    return Manifest.from_dict(data)


def read_manifest(run_dir: Path) -> dict:
    """A run directory's manifest as a plain dict (what analysis and the CLI read), old layouts included."""
    return load_manifest(run_dir).to_dict()
