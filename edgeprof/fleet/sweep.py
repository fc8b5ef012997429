"""One sweep across a fleet: every device gets the whole sweep, and the head writes one ordinary run
directory per device (`compare`, `results` and `report` read them as they read local runs).

The head plans each device's configurations with that device's facts (its cores, whether it offloads to a
GPU, its ONNX Runtime providers), exports every artifact once, and gives each device's run to a
`RunSession` (manifest, resume, records, the end), as a local run does. `DaskLauncher` is only where the
configurations run: it ships each device the files it lacks and submits one task per configuration
claiming the device's single resource unit, so a device measures one configuration at a time while
devices run in parallel. A configuration is confirmed only by the records its device sends back; anything
else (a device that leaves, a head that dies, a task the engine cancels) is `lost`, and
`--resume FLEET_DIR` runs exactly those again.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edgeprof.bench.execute import Events, ignore_events, resolve_auto_gpu_layers
from edgeprof.bench.plan import BenchConfig, Target, expand
from edgeprof.bench.runner import artifact_request, export_in_child, record_ids
from edgeprof.bench.session import Assignment, ConfigOutcome, Ending, Lost, RunSession, SessionResult, drive
from edgeprof.bench.sweep import SweepSpec
from edgeprof.errors import ConfigError, EdgeprofError
from edgeprof.export.in_child import ExportFailed
from edgeprof.fleet import FLEET_FILE, node
from edgeprof.fleet.credentials import FleetCredentials
from edgeprof.fleet.head import connect, list_devices
from edgeprof.fleet.shipping import CHUNK_BYTES, head_path, make_shipment
from edgeprof.paths import ensure_writable_dir
from edgeprof.results.records import Record
from edgeprof.results.rundir import Manifest, RunDir

POLL_S = 0.5
RESULT_TIMEOUT_S = 30  # fetching a finished configuration's records and samples from its device
SHIP_TIMEOUT_S = 600


@dataclass
class FleetResult:
    """What a fleet sweep left: its folder, one run directory and summary per device, how it ended."""

    folder: Path
    run_dirs: dict[str, Path]
    rows: dict[str, list[dict]]
    lost: dict[str, int]
    absent: list[str]
    exit_code: int = 0
    ended: str | None = None  # why the sweep stopped short (one line: the head stopped answering)


@dataclass
class DeviceRun:
    """One device's part of a fleet sweep: its node's engine address, its session and configurations."""

    name: str
    worker: str
    session: RunSession
    configs: list[BenchConfig] = field(default_factory=list)


def run_fleet(spec: SweepSpec | None, address: str, credentials: FleetCredentials, devices: list[str], out: Path,
              resume_dir: Path | None = None, on_event: Events = ignore_events) -> FleetResult:
    """Run `spec` on `devices` of the fleet at `address` (all joined devices when empty), or continue the
    fleet sweep in `resume_dir` (its own spec and devices; `spec` and `devices` are then not read; `address`
    empty: the head it ran on)."""
    if resume_dir is not None and not address:
        address = json.loads((resume_dir / FLEET_FILE).read_text())["address"]
    client = connect(address, credentials)
    with _quiet_engine():  # the engine's own reconnect errors and tracebacks: the sweep says it in one line
        try:
            return _sweep(client, address, spec, devices, out, resume_dir, on_event)
        finally:
            with contextlib.suppress(Exception):  # a head that is gone has nothing to close; the run is written
                client.close()


@contextlib.contextmanager
def _quiet_engine():
    """Dask's loggers at CRITICAL while a sweep runs here, then as they were: a head that dies makes the
    client log reconnect attempts and tracebacks, and what the user needs is the sweep's own line."""
    import logging

    names = ["distributed", *(n for n in logging.root.manager.loggerDict if n.startswith("distributed."))]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _sweep(client, address: str, spec: SweepSpec | None, devices: list[str], out: Path, resume_dir: Path | None,
           on_event: Events) -> FleetResult:
    present = {d.name: d for d in list_devices(client)}
    if resume_dir is not None:
        fleet = _read_fleet_file(resume_dir)
        spec, devices, folder, fleet_id = SweepSpec.from_dict(fleet["sweep"]), fleet["devices"], resume_dir, fleet["fleet_id"]
    else:
        devices = devices or sorted(present)
        if not devices:
            raise ConfigError(f"no device has joined the fleet at {address}: run `edgeprof fleet join "
                              f"{address}` on each device")
        fleet_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
        folder = ensure_writable_dir(out, "output folder") / f"fleet-{fleet_id}"
    absent = [name for name in devices if name not in present]
    if absent and resume_dir is None:
        raise ConfigError(f"device {absent[0]!r} is not in the fleet at {address} (joined: "
                          f"{', '.join(sorted(present)) or 'none'})")
    for name in absent:
        on_event("message", text=f"{name} has not joined the fleet: its unfinished configurations wait "
                                 "for the next --resume")
    if resume_dir is None:
        folder.mkdir(parents=True)
        _write_json(folder / FLEET_FILE, {"fleet_id": fleet_id, "address": address, "devices": devices,
                                          "sweep": spec.to_dict()})
    fleet_info = {"address": address, "fleet_id": fleet_id}
    runs = [_plan_device(client, spec, present[name], folder, fleet_info, resume_dir is not None, on_event)
            for name in devices if name in present]
    launcher = DaskLauncher(client, spec, runs, fleet_info, on_event)
    ending = Ending()
    try:
        launcher.export()
        drive([(run.session, run.configs) for run in runs], launcher)
        ending = Ending(why=launcher.ended)
    except KeyboardInterrupt:
        ending = Ending(130)
    finally:
        launcher.cancel()
        ends = {run.name: run.session.finish(ending) for run in runs}
    return _result(folder, ends, absent, ending)


def _result(folder: Path, ends: dict[str, SessionResult], absent: list[str], ending: Ending) -> FleetResult:
    result = FleetResult(folder, {name: end.run_dir for name, end in ends.items()},
                         {name: end.rows for name, end in ends.items()},
                         {name: end.lost for name, end in ends.items()}, absent, ending.exit_code, ending.why)
    if not result.exit_code and (absent or any(end.exit_code for end in ends.values())):
        result.exit_code = 1
    return result


def _plan_device(client, spec: SweepSpec, device, folder: Path, fleet_info: dict, resuming: bool,
                 on_event: Events) -> DeviceRun:
    """The device's configurations, planned with its own facts, and its session (new, or resumed)."""
    try:
        facts = client.submit(node.describe_node, workers=[device.address], pure=False,
                              key=f"edgeprof-describe|{device.name}|{secrets.token_hex(4)}").result(timeout=120)
    except Exception as exc:  # noqa: BLE001 - whatever the engine raises (a head gone too), it is one line
        raise ConfigError(f"device {device.name} did not describe itself within 120 s ({_why(exc)}); "
                          "see its `fleet join` output and the head's") from None
    from edgeprof import __version__

    if facts["edgeprof_version"] != __version__:
        raise ConfigError(f"device {device.name} runs edgeprof {facts['edgeprof_version']}, the head {__version__}: "
                          "install the same version on both, or its records would not compare")
    target = Target(facts["physical_cores"], facts["gpu_offload"], tuple(facts["ort_providers"]))
    grid = resolve_auto_gpu_layers(spec.grid, facts["gpu_offload"])
    configs = expand(spec.models, spec.quants, spec.backends, grid, spec.allow_long_context, target=target)
    if any(c.hp.power_mode for c in configs):  # the switch and its restore live in a local run's execute
        raise ConfigError("power_mode is not available through a fleet: run the sweep with edgeprof on the Jetson "
                          "itself (sudo edgeprof sweep FILE)")
    path = folder / device.name
    if resuming and (path / "manifest.json").exists():
        session = RunSession.resume(path, spec, len(configs), on_event, name=device.name)
    else:
        path.mkdir(parents=True, exist_ok=True)
        info = {**fleet_info, "device": device.name, "host": device.host}
        device_info = {"profile": facts["profile"], "kind": facts["device_profile"]["kind"],
                       "emulated": facts["emulate"], "host": facts["host"], "fleet": info}
        manifest = Manifest(f"{fleet_info['fleet_id']}-{device.name}", device_info,
                            device_profile=facts["device_profile"], calibration=facts["calibration"],
                            jetson=facts["jetson"], fleet=info)
        session = RunSession.create(RunDir(path, manifest.run_id), manifest, spec, len(configs), on_event,
                                    name=device.name)
    return DeviceRun(device.name, device.address, session, configs)


class DaskLauncher:
    """The fleet's launcher: configurations run on the devices' Dask workers. It decides nothing about
    records; every configuration it was handed comes back from `settle` once, confirmed or `Lost`."""

    def __init__(self, client, spec: SweepSpec, runs: list[DeviceRun], fleet_info: dict, on_event: Events):
        self.client = client
        self.spec = spec
        self.runs = {run.session.name: run for run in runs}
        self.fleet_info = fleet_info
        self.on_event = on_event
        self.exports: dict = {}  # ArtifactRequest -> (Shipment, parent Shipment | None), or the export's error
        self.pending: dict = {}  # future -> Assignment
        self.unsent: list[Assignment] = []  # handed out, not submitted (the engine failed while shipping)
        self.ended: str | None = None  # why the engine stopped answering, one line

    # -- artifacts ------------------------------------------------------------------------------------
    def export(self) -> None:
        """Export each artifact the devices need, once, on the head."""
        for run in self.runs.values():
            for config in run.configs:
                if config.skip:
                    continue
                for request in _requests(config, self.spec.fidelity, self.spec.calibration_text):
                    if request in self.exports:
                        continue
                    try:
                        artifact, parent = export_in_child(request, self._export_progress)
                        self.exports[request] = (make_shipment(artifact), make_shipment(parent) if parent else None)
                    except (EdgeprofError, ExportFailed) as exc:
                        self.exports[request] = str(exc)

    def _export_progress(self, step: str, done: int, total: int) -> None:
        self.on_event("export", step=step, done=done, total=total)

    def run_key_of(self, session: RunSession, config: BenchConfig) -> str:
        return record_ids(config, self.artifact_of(session, config))[1]

    def artifact_of(self, session: RunSession, config: BenchConfig):
        """The head's artifact for a configuration whose identity is its file (run keys need its hash)."""
        if not config.source.is_file or config.skip:
            return None
        entry = self.exports.get(artifact_request(config, "as-is"))
        return entry[0].artifact if entry and not isinstance(entry, str) else None

    # -- launching ------------------------------------------------------------------------------------
    def launch(self, assignments: list[Assignment]) -> None:
        self.unsent = list(assignments)
        try:
            for name in dict.fromkeys(a.session.name for a in assignments):
                self._ship(self.runs[name])
            while self.unsent:
                assignment = self.unsent[0]
                self.pending[self._submit(assignment)] = assignment
                self.unsent.pop(0)
        except Exception as exc:  # noqa: BLE001 - the engine failed: what was not submitted is lost, not an error
            self.ended = f"the fleet stopped answering while work was sent ({_why(exc)})"

    def _ship(self, run: DeviceRun) -> None:
        """Send the device every file it lacks; each arrives hashed, and is hashed again before use."""
        shipments = {s.artifact.sha256: s for entry in self.exports.values() if not isinstance(entry, str)
                     for s in entry if s is not None}
        for shipment in shipments.values():
            missing = self._on(run, node.missing_files, shipment)
            for file in (f for f in shipment.files if f.name in missing):
                self.on_event("ship", device=run.name, file=file.name, bytes=file.bytes)
                with open(head_path(shipment, file), "rb") as f:
                    offset = 0
                    while chunk := f.read(CHUNK_BYTES):
                        self._on(run, node.write_chunk, shipment, file.name, offset, chunk)
                        offset += len(chunk)
                    if offset == 0:
                        self._on(run, node.write_chunk, shipment, file.name, 0, b"")
                self._on(run, node.seal_file, shipment, file.name)

    def _on(self, run: DeviceRun, function, *args):
        return self.client.submit(function, *args, workers=[run.worker], pure=False,
                                  key=f"edgeprof-ship|{run.name}|{secrets.token_hex(6)}").result(timeout=SHIP_TIMEOUT_S)

    def _submit(self, assignment: Assignment):
        config, name = assignment.config, assignment.session.name
        artifacts = {} if config.skip else {request: self.exports[request] for request in
                                            _requests(config, self.spec.fidelity, self.spec.calibration_text)}
        job = node.MeasureJob(self.spec.to_dict(), config, artifacts, dict(self.fleet_info))
        return self.client.submit(measure_on_device, job, pure=False, retries=0,
                                  resources={node.resource_name(name): 1},
                                  priority=assignment.total - assignment.index,
                                  key=f"edgeprof-measure|{name}|{config.label}|{secrets.token_hex(4)}")

    # -- settling -------------------------------------------------------------------------------------
    def settle(self) -> Iterator[tuple[Assignment, ConfigOutcome | Lost]]:
        for assignment in self.unsent:
            yield assignment, Lost(self.ended or "it was never sent to its device")
        self.unsent = []
        while self.pending and self.ended is None:
            time.sleep(POLL_S)
            for future in [f for f in self.pending if f.done()]:
                assignment = self.pending.pop(future)
                yield assignment, self._outcome(future, assignment)
            try:
                joined = {d.name for d in list_devices(self.client)}
            except Exception as exc:  # noqa: BLE001 - whatever the engine raises, the head is out of reach
                self.ended = f"the fleet's head stopped answering ({_why(exc)})"
                break
            for name in {a.session.name for a in self.pending.values()} - joined:
                yield from self._lose_device(name)
        for future, assignment in list(self.pending.items()):
            del self.pending[future]
            yield assignment, Lost(self.ended or "the sweep ended before it was confirmed")

    def _outcome(self, future, assignment: Assignment) -> ConfigOutcome | Lost:
        """Only a finished task's result confirms a configuration; a cancelled or failed task is lost."""
        device = assignment.session.name
        if future.status != "finished":
            if self.client.status != "running":
                self.ended = self.ended or "the fleet's head stopped answering (its connection closed)"
            return Lost(f"the fleet task ended {future.status} on {device}")
        try:  # the result still lives on the device: one that dies now takes it along
            outcome = outcome_of(future.result(timeout=RESULT_TIMEOUT_S))
        except Exception as exc:  # noqa: BLE001 - whatever the engine raises, the configuration is lost
            return Lost(f"device {device} finished it but its result could not be fetched ({_why(exc)})")
        if outcome.device is not None:  # the head's view of where the device is in the fleet
            outcome.device = {**outcome.device, "fleet": assignment.session.manifest.device.get("fleet")}
        return outcome

    def _lose_device(self, name: str) -> Iterator[tuple[Assignment, Lost]]:
        """The device left: its unfinished configurations are `lost`, to be resumed on it later."""
        mine = [f for f, a in self.pending.items() if a.session.name == name]
        with contextlib.suppress(Exception):  # a head that is gone has nothing left to cancel
            self.client.cancel(mine)
        for future in mine:
            yield self.pending.pop(future), Lost(f"device {name} left the fleet before this configuration finished")
        self.on_event("device_lost", device=name, lost=self.runs[name].session.lost)

    def cancel(self) -> None:
        """Withdraw what is still queued (Ctrl-C): those configurations have no record and rerun on resume."""
        with contextlib.suppress(Exception):
            self.client.cancel(list(self.pending))


def measure_on_device(job: node.MeasureJob) -> dict:
    """The task a device runs: `node.measure_configuration`'s plain dict (the head forwards a device's result
    only if its pickle builds plain values: fleet/untrusted.py), or `{"error": why}`. An error raised here is the
    device's own account (a `failed` configuration); only the engine can lose one."""
    try:
        return node.measure_configuration(job)
    except Exception as exc:  # noqa: BLE001 - the device confirms it could not measure, and why
        return {"error": f"the device could not measure it: {type(exc).__name__}: {exc}"}


def outcome_of(result: dict) -> ConfigOutcome:
    """A device's plain result as the session's `ConfigOutcome`."""
    if result.get("error"):
        return ConfigOutcome([], error=result["error"])
    return ConfigOutcome([Record(**data) for data in result["records"]], result["artifacts"],
                         samples_csv=result["samples_csv"], jobs=result["jobs"], device=result["device_info"],
                         sensors=result["sensors"])


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _requests(config: BenchConfig, fidelity: bool, calibration_text: str | None = None) -> set:
    """The artifacts a device's Runner asks for: the configuration's, and for a model file, the file as-is
    (its run key is its content's hash)."""
    requests = {artifact_request(config, config.quant, fidelity, calibration_text)}  # as the device's Runner asks
    if config.source.is_file:
        requests.add(artifact_request(config, "as-is"))
    return requests


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def _read_fleet_file(folder: Path) -> dict:
    try:
        return json.loads((folder / FLEET_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{folder}: not a fleet sweep folder (no {FLEET_FILE})") from None
    except ValueError:
        raise ConfigError(f"{folder / FLEET_FILE}: not readable JSON") from None
