"""Run configurations, each in a child process with a timeout, and append one record per repetition."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgeprof.bench.contracts import (EnergyPassDone, Event, Extras, Failed, FidelityJob, Loaded, Progress,
                                      Repetition, WorkerJob, parse_event, read_events)
from edgeprof.bench.energy_pass import plan_energy_pass
from edgeprof.bench.plan import BenchConfig
from edgeprof.bench.sustain import SustainedRun
from edgeprof.config import config_id, run_key
from edgeprof.errors import EdgeprofError
from edgeprof.fidelity import FidelitySettings, text_sha256
from edgeprof.fidelity import cache_file as fidelity_cache_file
from edgeprof.lifetime import EventTail, child_env
from edgeprof.export.artifacts import Artifact
from edgeprof.export.in_child import ExportFailed, export_artifact
from edgeprof.paths import cache_root
from edgeprof.results.records import FidelityOutcome, KvPrediction, Record, WorkerFacts
from edgeprof.results.rundir import RunDir
from edgeprof.sensors.session import SensorSession

_OOM_MARKERS = ("out of memory", "failed to allocate", "std::bad_alloc", "cannot allocate memory")


@dataclass(frozen=True)
class RunOptions:
    repetitions: int = 3
    warmup: int = 1
    timeout_s: float = 900.0
    seed: int = 0
    cpu_affinity: tuple[int, ...] | None = None  # set when emulating a device with fewer cores
    fidelity: bool = True  # perplexity over a text, and KL against the unquantized parent at every position
    fidelity_settings: FidelitySettings = FidelitySettings()  # the text, tokens per chunk and chunks
    profile_ops: bool = False  # a profiled pass after the measured ones: time by operator category
    energy_window_s: float = 2.0  # shortest steady energy window per repetition; 0 = energy from timed phases only
    calibration_text: str | None = None  # what calibrated quantizations (IQ, -imat, int4-gptq) calibrate on
    gpu_uuids: tuple[str, ...] = ()  # the GPUs the run uses; the worker sees only these (CUDA_VISIBLE_DEVICES)
    sustain_s: float = 0.0  # after the repetitions, generate back to back this long (0: no sustained run)
    sustain_window_s: float = 10.0  # shortest window of the sustained run's time series
    sustain_until_steady: bool = False  # end the sustained run once throughput and temperature settle


Notify = Callable[..., None]  # notify(event_name, **details); the CLI renders progress from it


@dataclass(frozen=True)
class ArtifactRequest:
    """The artifact one configuration needs: its model, format and quantization, and whether fidelity's
    unquantized parent comes with it. Equal requests share one export."""

    spec: str
    seed: int
    format: str
    quant: str
    with_parent: bool
    calibration_text: str | None = None


def artifact_request(config: BenchConfig, quant: str, with_parent: bool = False,
                     calibration_text: str | None = None) -> ArtifactRequest:
    """A model file is run as it is (GGUF: its own quantization); it has no parent to compare with."""
    quant = "f32" if quant == "as-is" and config.format == "gguf" else quant
    return ArtifactRequest(config.source.spec, config.source.seed, config.format, quant,
                           with_parent and not config.source.is_file,
                           None if config.source.is_file else calibration_text)  # a file is not re-quantized


ArtifactProvider = Callable[[ArtifactRequest, Callable[[str, int, int], None]], tuple[Artifact, Artifact | None]]


def export_in_child(request: ArtifactRequest, progress: Callable[[str, int, int], None]) -> tuple[Artifact, Artifact | None]:
    """The default provider: export (or find in the cache) on this host, in a child process."""
    return export_artifact(request.spec, request.format, request.quant, request.seed,
                           with_parent=request.with_parent, progress=progress,
                           calibration_text=request.calibration_text)


def ignore_events(*_args, **_kwargs) -> None:
    """The listener of a caller that renders nothing."""
    return None


class Runner:
    """Runs a list of configurations into one run directory."""

    def __init__(self, run_dir: RunDir, device: dict, options: RunOptions, notify: Notify = ignore_events,
                 sensors: SensorSession | None = None, artifacts: ArtifactProvider = export_in_child,
                 setup: Callable[[BenchConfig], dict] | None = None):
        """`artifacts` supplies each configuration's model file: exported here by default; a fleet device
        gets the files its head shipped, checked against their hashes. `setup` puts the device in the state
        a configuration asks for (a Jetson power mode) before it runs; what it returns joins the records."""
        self.setup = setup
        self.run_dir = run_dir
        self.provide = artifacts
        self.sensors = sensors
        self.device = device
        self.options = options
        self.notify = notify
        self.writer = run_dir.writer()
        self.jobs_dir = run_dir.path / "jobs"
        self.jobs_dir.mkdir(exist_ok=True)
        self.artifacts: dict[str, dict] = {}
        self._exports: dict[ArtifactRequest, tuple[Artifact, Artifact | None]] = {}

    def run(self, configs: list[BenchConfig]) -> None:
        """Run each configuration in order into the run directory: records only, for scripts and tests (a run
        with a manifest, resume and a summary is a `bench.session.RunSession`)."""
        for index, config in enumerate(configs):
            self.notify("config_started", index=index, total=len(configs), label=config.label)
            for record in self.run_one(config):
                self.writer.append(record)
            self.notify("config_finished", index=index, total=len(configs), label=config.label)

    # -- one configuration ---------------------------------------------------------------------
    def run_one(self, config: BenchConfig) -> list[Record]:
        started = time.time()
        if config.skip:
            return [self._record(config, None, None, "skipped", error=config.skip, started=started)]
        try:
            artifact, parent = self._export(config, config.quant, with_parent=self.options.fidelity)
        except EdgeprofError as exc:
            return [self._record(config, None, None, "failed", error=str(exc), started=started)]
        except ExportFailed as exc:  # an exporter's own failure or crash (optimum, torch) fails this config only
            return [self._record(config, None, None, "failed", error=str(exc), started=started)]
        self.artifacts[artifact.path] = artifact.__dict__
        state = self.setup(config) if self.setup else {}
        return self._run_child(config, artifact, parent, started, state)

    def fidelity_only(self, config: BenchConfig) -> tuple[Artifact | None, dict]:
        """`edgeprof fidelity`: a configuration's artifact (exported or cached) and its fidelity job alone,
        nothing timed: (the artifact, the job's fidelity_* figures and fidelity_status)."""
        if config.skip:
            return None, FidelityOutcome("skipped", config.skip).metrics()
        try:
            artifact, parent = self._export(config, config.quant, with_parent=True)
        except (EdgeprofError, ExportFailed) as exc:
            return None, FidelityOutcome("failed", str(exc)).metrics()
        self.notify("config_started", index=0, total=1, label=config.label)
        return artifact, self._fidelity(self._ids(config, artifact)[1], config, artifact, parent)

    def _export(self, config: BenchConfig, quant: str, with_parent: bool = False) -> tuple[Artifact, Artifact | None]:
        """The configuration's artifact (and its unquantized parent), exported in a child process once per
        run: torch or a native quantizer that crashes must not take the sampling parent with it."""
        request = artifact_request(config, quant, with_parent, self.options.calibration_text)
        if request not in self._exports:
            def progress(step: str, done: int, total: int) -> None:
                self.notify("export", step=step, done=done, total=total)

            self._exports[request] = self.provide(request, progress)
        return self._exports[request]

    def run_key_of(self, config: BenchConfig) -> str:
        """The run key a configuration's records will carry (a model file is identified by its content)."""
        return self._ids(config, self.identity_artifact(config))[1]

    def identity_artifact(self, config: BenchConfig) -> Artifact | None:
        """The artifact a model-file configuration is identified by (its content's hash); None for the rest."""
        return self._export(config, "as-is")[0] if config.source.is_file and not config.skip else None

    def _ids(self, config: BenchConfig, artifact: Artifact | None) -> tuple[str, str]:
        return record_ids(config, artifact)

    def _run_child(self, config: BenchConfig, artifact: Artifact, parent: Artifact | None,
                   started: float, state: dict | None = None) -> list[Record]:
        _, key = self._ids(config, artifact)
        sustained = SustainedRun(self.sensors, self.run_dir.path, self.jobs_dir, key, self.options.sustain_s,
                                 self.options.sustain_window_s, self.options.sustain_until_steady) \
            if self.options.sustain_s > 0 else None
        job = WorkerJob(config.backend, artifact.path, config.hp.to_dict(), warmup=self.options.warmup,
                        repetitions=self.options.repetitions, seed=self.options.seed,
                        cpu_affinity=list(self.options.cpu_affinity) if self.options.cpu_affinity else None,
                        profile_ops=self.options.profile_ops, energy_pass=self._energy_pass_plan(),
                        sustain=sustained.plan.to_dict() if sustained else None)
        returncode, timed_out, events, stderr_path = self._spawn(
            key, config.label, job, measured=True, watch=(lambda e: sustained.on_event(e.to_dict())) if sustained
            else None, extra_s=self.options.sustain_s)
        loaded = next((e for e in events if isinstance(e, Loaded)), None)
        info = loaded.info if loaded else None
        energy_pass = next((e.to_dict() for e in events if isinstance(e, EnergyPassDone)), None)
        repetitions = [e for e in events if isinstance(e, Repetition)]
        # The operator profile and the worker's GPU memory come once per configuration, after the repetitions.
        extras = {**(state or {}), **{k: v for e in events if isinstance(e, Extras) for k, v in e.metrics.items()}}
        if self.options.fidelity and repetitions:
            extras.update(self._fidelity(key, config, artifact, parent))
        if sustained:
            extras.update(sustained.finish([e.to_dict() for e in events]))
        worker = worker_facts(loaded)
        records = [
            self._record(config, artifact, e.index, "ok",
                         metrics={**e.metrics, **worker.metrics(), **_kv_predicted(config),
                                  **self._sensor_metrics(key, e, config.hp.batch, energy_pass), **extras},
                         info=info, started=started, finished=e.finished_at,
                         energy_window=_energy_methods(energy_pass))
            for e in repetitions
        ]
        if self.sensors:
            for event in events:
                if isinstance(getattr(event, "phase", None), list):
                    self.sensors.mark(key, *event.phase)
            for phase, found in (energy_pass or {}).get("phases", {}).items():
                for t0, t1, _ in found["windows"]:
                    self.sensors.mark(key, f"energy-{phase}", t0, t1)
            self.sensors.flush_samples(key)
        if len(records) == self.options.repetitions and returncode == 0:
            return records
        status, error = _failure(returncode, timed_out, events, stderr_path, self.options.timeout_s)
        records.append(self._record(config, artifact, None, status, error=error, info=info, started=started))
        return records

    def _fidelity(self, key: str, config: BenchConfig, artifact: Artifact, parent: Artifact | None) -> dict:
        """Perplexity over the fidelity text and, against the unquantized parent (where there is one), KL,
        top-1 and Δp at every scored position, in a job of its own after the measurement: loading a 3B f16
        parent on an 8 GB board may run out of memory, and that must not turn three good repetitions into
        an `oom` configuration. Its outcome is `fidelity_status` (ok, failed, oom, timeout)."""
        try:
            job = fidelity_job(config.backend, artifact, parent, config.hp, self.options.fidelity_settings,
                               self.options.cpu_affinity)
        except EdgeprofError as exc:  # the text is gone (a fleet device without the head's file): fidelity only
            return FidelityOutcome("failed", str(exc)).metrics()
        returncode, timed_out, events, stderr_path = self._spawn(f"{key}.fidelity", config.label, job, measured=False)
        metrics = {k: v for e in events if isinstance(e, Extras) for k, v in e.metrics.items()}
        if returncode == 0 and metrics and "fidelity_error" not in metrics:
            return {**metrics, **FidelityOutcome("ok").metrics()}
        status, error = _failure(returncode, timed_out, events, stderr_path, self.options.timeout_s)
        return FidelityOutcome(status if returncode != 0 or timed_out else "failed",
                               metrics.get("fidelity_error") or error).metrics()

    def _spawn(self, name: str, label: str, job: WorkerJob, measured: bool,
               watch: Callable[[Event], None] | None = None,
               extra_s: float = 0.0) -> tuple[int | None, bool, list[Event], Path]:
        """Run one worker job to its end (or its timeout, `extra_s` later than the configured one): (return
        code, timed out, events, stderr log). Only a `measured` job has its CPU and memory sampled as the
        worker's; `watch` sees each event as it arrives (a sustained run's windows)."""
        job_path = self.jobs_dir / f"{name}.json"
        events_path = self.jobs_dir / f"{name}.events.jsonl"
        stderr_path = self.jobs_dir / f"{name}.stderr.log"
        events_path.unlink(missing_ok=True)
        job.write(job_path)
        with open(stderr_path, "w") as stderr:
            child = subprocess.Popen([sys.executable, "-m", "edgeprof.bench.worker", str(job_path), str(events_path)],
                                     stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True,
                                     env=child_env(self._gpu_env()))
            if self.sensors and measured:
                self.sensors.set_target(child.pid)
            try:
                timed_out = not self._wait(child, events_path, label, watch, extra_s)
            except BaseException:  # Ctrl-C, SIGTERM, SIGHUP: stop the child, discard this configuration, re-raise
                _kill_group(child)
                raise
            finally:
                if self.sensors and measured:
                    self.sensors.set_target(None)
        return child.returncode, timed_out, read_events(events_path), stderr_path

    def _wait(self, child: subprocess.Popen, events_path: Path, label: str, watch: Callable[[Event], None] | None = None,
              extra_s: float = 0.0, poll_s: float = 0.5) -> bool:
        """Wait for the worker, passing its progress events on; False (and the worker ended) on timeout."""
        deadline = time.monotonic() + self.options.timeout_s + extra_s
        tail = EventTail(events_path)
        while True:
            try:
                child.wait(timeout=min(poll_s, max(deadline - time.monotonic(), 0.0)))
                return True
            except subprocess.TimeoutExpired:
                for event in filter(None, map(parse_event, tail.new_events())):
                    if watch is not None:
                        watch(event)
                    if isinstance(event, Progress):
                        self.notify("config_progress", label=label, step=event.step, done=event.done,
                                    total=event.total, unit=event.unit)
                if time.monotonic() >= deadline:
                    _kill_group(child)
                    return False

    def _gpu_env(self) -> dict[str, str]:
        """Pin the worker to the run's GPUs by UUID: llama.cpp would otherwise split layers over all of them."""
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.options.gpu_uuids)} if self.options.gpu_uuids else {}

    def _energy_pass_plan(self) -> dict | None:
        """The steady windows the worker should hold, sized to this host's sensors (None: no energy sensor)."""
        if not (self.sensors and self.sensors.plan.available):
            return None
        plan = plan_energy_pass(self.options.energy_window_s, self.sensors.plan.required_window_s,
                                self.sensors.plan.period_s, self.options.repetitions)
        return plan.to_dict() if plan else None

    def _sensor_metrics(self, key: str, event: Repetition, batch: int, energy_pass: dict | None) -> dict:
        """Energy, power, temperature and throttling of one repetition: conditions over its timed prefill
        and decode, energy over the energy pass's window of the same index where there is one."""
        if not self.sensors:
            return {}
        windows = {phase: tuple(edges) for phase, edges in event.phases.items()}
        for phase, (t0, t1) in windows.items():
            self.sensors.mark(key, phase, t0, t1)
        tokens = {"prefill": event.metrics["prompt_tokens_total"], "decode": event.metrics["decoded_tokens_total"]}
        energy_windows = {phase: found["windows"][min(event.index, len(found["windows"]) - 1)]
                          for phase, found in (energy_pass or {}).get("phases", {}).items() if found["windows"]}
        return self.sensors.repetition_metrics(windows, tokens, requests=batch, energy_windows=energy_windows)

    def _record(self, config: BenchConfig, artifact: Artifact | None, repetition: int | None, status: str, *,
                metrics: dict | None = None, error: str | None = None, info: dict | None = None,
                started: float | None = None, finished: float | None = None,
                energy_window: dict | None = None) -> Record:
        return make_record(self.run_dir.run_id, self.device, config, artifact, repetition, status, metrics=metrics,
                           error=error, info=info, started=started, finished=finished,
                           sensors=self._sensor_note(energy_window))

    def _sensor_note(self, energy_window: dict | None) -> dict:
        """How this record's energy was measured: the total's sources and the windows it came from."""
        if not self.sensors:
            return {"energy": "not sampled"}
        note = {"energy": self.sensors.describe()["energy"]}
        if self.sensors.plan.available:
            note["energy_window"] = energy_window or {
                "timed phases": "no energy pass (--energy-window 0): figures from the timed phases where "
                                f"they are at least {self.sensors.plan.required_window_s:g} s"}
        return note


def fidelity_job(backend: str, artifact: Artifact, parent: Artifact | None, hp, settings: FidelitySettings,
                 cpu_affinity: tuple[int, ...] | None = None) -> WorkerJob:
    """The worker job that measures one artifact's fidelity (cached by both hashes, the text's and the chunking)."""
    cache = fidelity_cache_file(cache_root() / "fidelity", backend, artifact.sha256, parent.sha256 if parent else None,
                                text_sha256(settings), settings)
    return WorkerJob(backend, artifact.path, hp.to_dict(), mode="fidelity",
                     cpu_affinity=list(cpu_affinity) if cpu_affinity else None,
                     fidelity=FidelityJob(parent.path if parent else None, parent.quant if parent else None,
                                          {"text": settings.text, "ctx": settings.ctx, "chunks": settings.chunks},
                                          str(cache)))


def worker_facts(loaded: Loaded | None) -> WorkerFacts:
    """The `WorkerFacts` metric group of a worker's `loaded` event (all None where it never loaded)."""
    if loaded is None:
        return WorkerFacts()
    info = loaded.info or {}
    return WorkerFacts(loaded.load_ms, info.get("worker_cpus"), info.get("cuda_visible_devices"), info.get("sampling"))


def record_ids(config: BenchConfig, artifact: Artifact | None) -> tuple[str, str]:
    """(config id, run key) of a configuration's records. A user's model file is identified by its content,
    so the same file joins across devices."""
    if artifact is not None and config.source.is_file:
        model = f"sha256:{artifact.sha256[:16]}"
    else:
        model = config.source.name
    quant = artifact.quant if artifact else config.quant
    cid = config_id(model, quant, config.backend, config.hp)
    return cid, run_key(cid, config.hp)


def make_record(run_id: str, device: dict, config: BenchConfig, artifact: Artifact | None, repetition: int | None,
                status: str, *, metrics: dict | None = None, error: str | None = None, info: dict | None = None,
                started: float | None = None, finished: float | None = None, sensors: dict | None = None) -> Record:
    """One record of `config` (with its artifact where there is one): what every record says of the model."""
    cid, key = record_ids(config, artifact)
    arch = config.source.architecture
    model = {
        "name": config.source.name, "spec": config.source.spec,
        "preset": config.source.preset.name if config.source.preset else None,
        "format": artifact.format if artifact else config.format,
        "quant": artifact.quant if artifact else config.quant,
        "bytes": artifact.bytes if artifact else None, "sha256": artifact.sha256 if artifact else None,
        "path": artifact.path if artifact else None,
        "parameters": arch.parameter_count if arch else (info or {}).get("model_parameters"),
        "hub": config.source.hub,  # repository, requested revision, resolved commit and file (Hub ids)
    }
    return Record(run_id=run_id, config_id=cid, run_key=key, repetition=repetition, status=status,
                  backend=config.backend, model=model, hyperparameters=config.hp.to_dict(), device=device,
                  metrics=metrics or {}, error=error, started_at=started, finished_at=finished or time.time(),
                  sensors=sensors or {})


def _kv_predicted(config: BenchConfig) -> dict:
    """The KV cache as the memory fit counts it: allocated for the whole context, and what the sequences
    hold after a repetition (depth + prompt + generated), beside the backend's own `kv_cache_bytes_held`."""
    from edgeprof.hardware.emulation import kv_cache_bytes

    hp = config.hp
    allocated = kv_cache_bytes(config, hp)
    if allocated is None:
        return {}
    return KvPrediction(allocated, kv_cache_bytes(config, hp, hp.depth + hp.prompt_tokens + hp.gen_tokens)).metrics()


def _energy_methods(energy_pass: dict | None) -> dict | None:
    if not energy_pass:
        return None
    return {phase: found["method"] for phase, found in energy_pass["phases"].items()}


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.wait()


def _stderr_tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())


def _failure(returncode: int | None, timed_out: bool, events: list[Event], stderr_path: Path,
             timeout_s: float) -> tuple[str, str]:
    """Classify how a child ended: timeout, oom (killed or allocation failure) or failed."""
    if timed_out:
        return "timeout", f"configuration exceeded the {timeout_s:g} s timeout"
    error_event = next((e for e in events if isinstance(e, Failed)), None)
    tail = _stderr_tail(stderr_path)
    if error_event:
        message = error_event.message
        status = error_event.status
        if any(marker in (message + tail).lower() for marker in _OOM_MARKERS):
            status = "oom"
        return status, message
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name
        if returncode == -signal.SIGKILL:
            return "oom", f"worker killed by {name} (likely the out-of-memory killer); stderr: {tail}"
        return "failed", f"worker died with {name}; stderr: {tail}"
    if any(marker in tail.lower() for marker in _OOM_MARKERS):
        return "oom", tail
    return "failed", f"worker exited with code {returncode}; stderr: {tail}"
