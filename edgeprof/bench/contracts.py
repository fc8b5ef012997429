"""What passes between the parent and a worker child: the job file it reads, and the event lines it appends.

Both sides build and read these dataclasses, so a field is named once (the worker and the runner used to
parse the same dicts independently). The job carries `schema_version`; a worker refuses a job of another
version in one line rather than misreading it. Event lines stay one JSON object each with an `event` name
(what `jobs/*.events.jsonl` of older runs hold), and `parse_event` reads a line into its dataclass, leaving
out unknown events and torn lines (a crash mid-write).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

from edgeprof.errors import ConfigError
from edgeprof.lifetime import emit_event

JOB_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class FidelityJob:
    """A fidelity job's own part: the unquantized parent (where there is one), the text settings (text,
    ctx, chunks) and the cache file its result is kept in."""

    parent_path: str | None
    parent_quant: str | None
    settings: dict
    cache: str


@dataclass(frozen=True)
class WorkerJob:
    """One worker child's job: measure a configuration (`mode="measure"`) or its fidelity alone."""

    backend: str
    model_path: str
    hyperparameters: dict  # Hyperparameters.to_dict()
    mode: str = "measure"  # measure | fidelity
    warmup: int = 1
    repetitions: int = 0
    seed: int = 0
    cpu_affinity: list[int] | None = None  # emulating a device with fewer cores
    profile_ops: bool = False
    energy_pass: dict | None = None  # EnergyPassPlan.to_dict(), sized to the parent's sensors
    sustain: dict | None = None  # SustainPlan.to_dict()
    fidelity: FidelityJob | None = None
    schema_version: int = JOB_SCHEMA_VERSION

    def write(self, path: Path) -> None:
        """The job file; settings a job does not use (None) are left out, as the dicts before it wrote them."""
        path.write_text(json.dumps({k: v for k, v in asdict(self).items() if v is not None}))

    @classmethod
    def read(cls, path: Path) -> "WorkerJob":
        data = json.loads(Path(path).read_text())
        if data.get("schema_version") != JOB_SCHEMA_VERSION:
            raise ConfigError(f"{path}: worker job schema {data.get('schema_version')}, this edgeprof reads "
                              f"{JOB_SCHEMA_VERSION} (parent and worker must be the same edgeprof)")
        if data.get("fidelity") is not None:
            data["fidelity"] = FidelityJob(**data["fidelity"])
        return cls(**data)


class Event:
    """One line of a worker's events file. `name` is the line's `event` value."""

    name: ClassVar[str]

    def to_dict(self) -> dict:
        return {"event": self.name, **asdict(self)}

    def emit(self, stream) -> None:
        """Append this event as one flushed line: what the child has done survives its crash."""
        emit_event(stream, self.to_dict())


@dataclass
class Loaded(Event):
    name: ClassVar[str] = "loaded"
    load_ms: float
    info: dict  # the session's facts, worker CPUs, CUDA_VISIBLE_DEVICES
    phase: list  # ["load", t0, t1] on the sampler's clock


@dataclass
class WarmedUp(Event):
    name: ClassVar[str] = "warmup"
    phase: list  # ["warmup", t0, t1]


@dataclass
class Repetition(Event):
    name: ClassVar[str] = "repetition"
    index: int
    metrics: dict  # RepetitionMetrics.to_dict()
    phases: dict  # phase -> [t0, t1]
    finished_at: float  # wall clock (time.time())


@dataclass
class Progress(Event):
    """Where the worker is, between timed regions only (for the parent's progress display)."""

    name: ClassVar[str] = "progress"
    step: str
    done: int | None = None
    total: int | None = None
    unit: str = "tokens"


@dataclass
class Extras(Event):
    """Figures that come once per job (GPU memory, operator profile, fidelity), or `<name>_error`."""

    name: ClassVar[str] = "extras"
    metrics: dict


@dataclass
class EnergyPassDone(Event):
    name: ClassVar[str] = "energy_pass"
    plan: dict
    phases: dict  # phase -> {"method", "windows": [[t0, t1, tokens], ...]}


@dataclass
class SustainWindow(Event):
    name: ClassVar[str] = "sustain_window"
    index: int
    t0: float
    t1: float
    since_start_s: float
    repetitions: int = 0
    prompt_tokens: int = 0
    decoded_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    last: bool = False
    stopped_early: bool = False


@dataclass
class Failed(Event):
    """The worker's own account of why it stopped (a native abort leaves none: the parent reads stderr)."""

    name: ClassVar[str] = "error"
    message: str
    status: str = "failed"  # failed | oom
    detail: str | None = None


EVENTS: dict[str, type] = {cls.name: cls for cls in (Loaded, WarmedUp, Repetition, Progress, Extras,
                                                      EnergyPassDone, SustainWindow, Failed)}


def parse_event(data: dict) -> Event | None:
    """The typed event of one decoded line, or None for a line this version does not know."""
    cls = EVENTS.get(data.get("event")) if isinstance(data, dict) else None
    if cls is None:
        return None
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError:  # a field missing: not a line this version wrote
        return None


def read_events(path: Path) -> list[Event]:
    """Every whole, known event of a worker's events file."""
    events = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                event = parse_event(json.loads(line))
            except ValueError:
                continue  # a line torn by a crash mid-write
            if event is not None:
                events.append(event)
    return events
