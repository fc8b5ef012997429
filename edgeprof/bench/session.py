"""One run session: a run directory from its plan to its last line, wherever its configurations run.

A `RunSession` owns what every run has: the manifest (created, or resumed with the finished configurations
kept and partial or lost ones dropped), which configurations are still to run, the records (appended and
fsynced as each configuration is confirmed), and the end: `lost` records for whatever was handed out and
never confirmed, the manifest's `status`, the summary and the exit code. A launcher only decides where a
configuration runs, and hands back either a `ConfigOutcome` (records the place that ran it confirmed) or
a `Lost` (anything else: a device gone, a dead head, an engine error). So nothing unconfirmed can be
recorded `failed`, and `--resume` runs exactly what is not finished.

Launchers: `LocalLauncher` (this host's worker processes, through the `Runner`) here, and the fleet's Dask
launcher in `fleet/sweep.py`. `drive` hands every unfinished configuration to a launcher and records what
each became; the caller then calls `finish` with how the run ended.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from edgeprof.bench.plan import BenchConfig
from edgeprof.bench.runner import Notify, Runner, ignore_events, make_record
from edgeprof.bench.sweep import SweepSpec, prune_unfinished
from edgeprof.export.artifacts import Artifact
from edgeprof.results.records import Record, read_records
from edgeprof.results.rundir import MANIFEST_SCHEMA_VERSION, Manifest, Resumption, RunDir, open_run_dir
from edgeprof.results.summary import summarize, write_summary_csv

FINE = ("ok", "skipped")  # row statuses that do not make a run's exit code 1


@dataclass
class ConfigOutcome:
    """What the place that ran a configuration confirmed: its records, the artifacts it used (path -> facts)
    and, where it ran elsewhere (a fleet device), what a local run writes into its folder itself: the
    samples as CSV text, the worker's job files, the device and its sensors as that run described them."""

    records: list[Record]
    artifacts: dict[str, dict] = field(default_factory=dict)
    samples_csv: str = ""
    jobs: dict[str, str] = field(default_factory=dict)
    device: dict | None = None
    sensors: dict | None = None
    error: str | None = None  # the place confirmed it could not measure, and why (no records): `failed`


@dataclass(frozen=True)
class Lost:
    """A configuration handed out and never confirmed, and why (one line)."""

    why: str


@dataclass(frozen=True)
class Ending:
    """How a run's driving ended: normally, stopped by a signal (`exit_code` 130 for Ctrl-C, 128 + n), or cut
    short by something outside the run (`why`, one line: the fleet's head stopped answering)."""

    exit_code: int = 0
    why: str | None = None

    @property
    def interrupted(self) -> bool:
        return self.exit_code >= 128


@dataclass
class SessionResult:
    """What a run left: its folder, one summary row per configuration, how it ended and its exit code
    (0 all ran; 1 a configuration failed or was lost, or the run was cut short; 128 + signal when stopped)."""

    run_dir: Path
    rows: list[dict]
    status: str
    lost: int = 0
    ended: str | None = None
    exit_code: int = 0

    @property
    def interrupted(self) -> bool:
        return self.status == "interrupted"

    @property
    def failed(self) -> list[dict]:
        return [row for row in self.rows if row["status"] not in FINE]


class RunSession:
    """One run directory's life. `name` prefixes its messages and events (a fleet device's name)."""

    def __init__(self, run_dir: RunDir, manifest: Manifest, spec: SweepSpec, finished: set[str],
                 on_event: Notify = ignore_events, name: str | None = None):
        self.run_dir = run_dir
        self.manifest = manifest
        self.spec = spec
        self.finished = finished
        self.on_event = on_event
        self.name = name
        self.writer = run_dir.writer()
        self.in_flight: dict[str, tuple[BenchConfig, Artifact | None]] = {}  # run key -> what it was handed out as
        self.lost = 0

    @classmethod
    def create(cls, run_dir: RunDir, manifest: Manifest, spec: SweepSpec, configurations: int,
               on_event: Notify = ignore_events, name: str | None = None) -> "RunSession":
        """A new run: its manifest written before anything runs (the sweep it was made from, so it resumes)."""
        manifest.sweep, manifest.configurations = spec.to_dict(), configurations
        session = cls(run_dir, manifest, spec, set(), on_event, name)
        session.save()
        return session

    @classmethod
    def resume(cls, path: Path, spec: SweepSpec, configurations: int, on_event: Notify = ignore_events,
               name: str | None = None) -> "RunSession":
        """Continue the run in `path` (any manifest schema): finished configurations are kept, the records of
        unfinished ones (partial repetitions, `lost`) dropped so they run again whole."""
        run_dir, manifest = open_run_dir(path)
        finished, dropped = prune_unfinished(run_dir.records_path, spec.repetitions)
        manifest.resumed.append(Resumption(len(finished), dropped, list(sys.argv)))
        manifest.schema_version, manifest.status, manifest.ended = MANIFEST_SCHEMA_VERSION, "running", None
        manifest.sweep, manifest.configurations = spec.to_dict(), configurations
        on_event("message", text=f"{name or f'resuming {path}'}: {len(finished)} configurations already finished"
                 + (f", {dropped} partial record(s) of an interrupted configuration dropped" if dropped else ""))
        session = cls(run_dir, manifest, spec, finished, on_event, name)
        session.save()
        return session

    def save(self) -> None:
        self.run_dir.write_manifest(self.manifest)

    def _event(self, name: str, **details) -> None:
        self.on_event(name, **({"device": self.name} if self.name else {}), **details)

    # -- what runs --------------------------------------------------------------------------------------
    def todo(self, configs: list[BenchConfig], run_key_of: Callable[[BenchConfig], str]) -> Iterator[tuple[str, BenchConfig]]:
        """(run key, configuration) of each configuration not finished yet, in order."""
        for index, config in enumerate(configs):
            key = run_key_of(config)
            if key in self.finished:
                self._event("config_already_done", index=index, total=len(configs), label=config.label)
            else:
                yield key, config

    def handed_out(self, key: str, config: BenchConfig, artifact: Artifact | None = None) -> None:
        """`config` is now a launcher's; until it is confirmed, the session counts it as in flight (`artifact`:
        the file a model-file configuration is identified by, for its `lost` record)."""
        self.in_flight[key] = (config, artifact)

    def confirm(self, key: str, outcome: ConfigOutcome) -> None:
        """Write what the place that ran `key` confirmed: its records (fsynced), samples, job files and facts."""
        config, artifact = self.in_flight.pop(key)
        records = outcome.records or [make_record(self.run_dir.run_id, self.manifest.device, config, artifact, None,
                                                  "failed", error=outcome.error or "no records came back")]
        for record in records:
            record.run_id = self.run_dir.run_id
            self.writer.append(record)
        if outcome.samples_csv:
            _append_samples(self.run_dir.samples_path, outcome.samples_csv)
        if outcome.jobs:
            self.run_dir.jobs_path.mkdir(exist_ok=True)
            for name, text in outcome.jobs.items():
                (self.run_dir.jobs_path / name).write_text(text)
        if outcome.device is not None:
            self.manifest.device = outcome.device
        if outcome.sensors:
            self.manifest.sensors = outcome.sensors
        self.manifest.add_artifacts(outcome.artifacts)
        self.save()
        self.finished.add(key)
        self._event("config_finished", label=config.label)

    def lose(self, key: str, lost: Lost) -> None:
        """`key` was handed out and will not be confirmed: a `lost` record, which `--resume` runs again."""
        config, artifact = self.in_flight.pop(key)
        self.writer.append(make_record(self.run_dir.run_id, self.manifest.device, config, artifact, None, "lost",
                                       error=f"{lost.why}; `edgeprof sweep --resume` runs it again"))
        self.lost += 1
        self._event("config_finished", label=config.label)

    # -- the end ----------------------------------------------------------------------------------------
    def finish(self, ending: Ending = Ending()) -> SessionResult:
        """Close the run: configurations still in flight are `lost` (unless the user stopped the run: those
        have no record and rerun on resume as before), then the manifest's status, the summary and the exit
        code."""
        if not ending.interrupted:
            for key in list(self.in_flight):
                self.lose(key, Lost(ending.why or "the run ended before this configuration was confirmed"))
        self.in_flight.clear()
        why = ending.why or (f"{self.lost} configuration(s) lost" if self.lost else None)
        self.manifest.status = "interrupted" if ending.interrupted else f"incomplete: {why}" if why else "complete"
        self.manifest.ended = why if not ending.interrupted else None
        self.save()
        rows = summarize(read_records(self.run_dir.records_path))
        write_summary_csv(rows, self.run_dir.summary_path)
        result = SessionResult(self.run_dir.path, rows, self.manifest.status, self.lost, why, ending.exit_code)
        if not ending.interrupted and (why or result.failed):
            result.exit_code = 1  # measured configurations are kept; the code tells scripts that some did not run
        return result


@dataclass(frozen=True)
class Assignment:
    """One configuration handed to a launcher: its session, run key, and place in that session's order."""

    session: RunSession
    key: str
    config: BenchConfig
    index: int
    total: int


class Launcher(Protocol):
    """Where configurations run. `launch` takes the configurations handed out; `settle` yields each of them
    exactly once, as it ends: (assignment, `ConfigOutcome` or `Lost`). Whatever goes wrong on the way
    (a device gone, the engine's connection closed) is a `Lost`, never an exception out of `settle`."""

    def run_key_of(self, session: RunSession, config: BenchConfig) -> str: ...

    def artifact_of(self, session: RunSession, config: BenchConfig) -> Artifact | None: ...

    def launch(self, assignments: list[Assignment]) -> None: ...

    def settle(self) -> Iterable[tuple[Assignment, ConfigOutcome | Lost]]: ...


def drive(work: list[tuple[RunSession, list[BenchConfig]]], launcher: Launcher) -> None:
    """Hand each session's unfinished configurations to `launcher`, and record what each became. A
    configuration is the session's `in_flight` from the moment it is handed out, so however driving ends,
    `RunSession.finish` knows what was never confirmed."""
    assignments = []
    for session, configs in work:
        todo = list(session.todo(configs, lambda c, s=session: launcher.run_key_of(s, c)))
        if session.name:
            session._event("device_started", configurations=len(todo))
        for index, (key, config) in enumerate(todo):
            session.handed_out(key, config, launcher.artifact_of(session, config))
            assignments.append(Assignment(session, key, config, index, len(todo)))
    launcher.launch(assignments)
    for assignment, outcome in launcher.settle():
        if isinstance(outcome, Lost):
            assignment.session.lose(assignment.key, outcome)
        else:
            assignment.session.confirm(assignment.key, outcome)


class LocalLauncher:
    """This host: one configuration at a time, each in a worker process of the `Runner`'s."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self.queue: list[Assignment] = []

    def run_key_of(self, session: RunSession, config: BenchConfig) -> str:
        return self.runner.run_key_of(config)

    def artifact_of(self, session: RunSession, config: BenchConfig) -> Artifact | None:
        return self.runner.identity_artifact(config)

    def launch(self, assignments: list[Assignment]) -> None:
        self.queue.extend(assignments)

    def settle(self) -> Iterator[tuple[Assignment, ConfigOutcome | Lost]]:
        while self.queue:
            assignment = self.queue.pop(0)
            assignment.session.on_event("config_started", index=assignment.index, total=assignment.total,
                                        label=assignment.config.label)
            records = self.runner.run_one(assignment.config)
            yield assignment, ConfigOutcome(records, dict(self.runner.artifacts))


def _append_samples(path: Path, text: str) -> None:
    """Append a CSV's rows (its header only where the file is new)."""
    lines = text.splitlines(keepends=True)
    with open(path, "a") as f:
        f.writelines(lines if f.tell() == 0 else lines[1:])
