"""The record: one line of records.jsonl, carrying every setting that produced its figures."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "oom", "timeout", "skipped", "lost")  # lost: its fleet device left mid-sweep


@dataclass
class Record:
    """One configuration x repetition (repetition is None for a configuration that produced none)."""

    run_id: str
    config_id: str
    run_key: str
    repetition: int | None
    status: str
    backend: str
    model: dict
    hyperparameters: dict
    device: dict
    metrics: dict = field(default_factory=dict)
    sensors: dict = field(default_factory=dict)  # how energy was measured, or why it was not
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=True)


class RecordWriter:
    """Appends records and fsyncs each line, so a killed run keeps every finished line intact."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: Record) -> None:
        with open(self.path, "a") as f:
            f.write(record.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())


def read_records(path: Path) -> list[dict]:
    """All complete lines of a records.jsonl (a torn last line from a crash is ignored)."""
    records = []
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records
