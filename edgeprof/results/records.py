"""The record: one line of records.jsonl, carrying every setting that produced its figures.

A record's `metrics` stay one flat mapping (what pandas, `summarize` and every older run directory read);
the groups that fill it are dataclasses whose field names are the metric names (`WorkerFacts`,
`KvPrediction`, `FidelityOutcome`; a repetition's timings are `bench.measure.RepetitionMetrics`), so a
metric is named once. The record's own fields did not change with them: `SCHEMA_VERSION` is still 1.
"""

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


class MetricGroup:
    """A group of metrics a record's `metrics` takes flat, under its field names."""

    def metrics(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WorkerFacts(MetricGroup):
    """From the worker's `loaded` event, in every `ok` record: how long loading took (ms), the CPUs and GPUs
    (CUDA_VISIBLE_DEVICES) the worker could use, and where greedy sampling ran (host or device)."""

    load_ms: float | None = None
    worker_cpus: int | None = None
    worker_gpus: str | None = None
    sampling: str | None = None


@dataclass(frozen=True)
class KvPrediction(MetricGroup):
    """The KV cache as the memory fit counts it (bytes): allocated for the whole context, and what the
    sequences hold after a repetition (depth + prompt + generated), beside the backend's `kv_cache_bytes_held`."""

    kv_cache_bytes: int
    kv_cache_bytes_held_predicted: int | None


@dataclass(frozen=True)
class FidelityOutcome(MetricGroup):
    """How a configuration's fidelity job ended (ok, failed, oom, timeout, skipped) and why, beside its
    `fidelity_*` figures where it measured them."""

    fidelity_status: str
    fidelity_error: str | None = None

    def metrics(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k == "fidelity_status"}


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
