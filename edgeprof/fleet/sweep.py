"""One sweep across a fleet: every device gets the whole sweep, and the head writes one ordinary run
directory per device (`compare`, `results` and `report` read them as they read local runs).

The head plans each device's configurations with that device's facts (its cores, whether it offloads to a
GPU, its ONNX Runtime providers), exports every artifact once, ships each device the files it lacks, and
submits one task per configuration claiming the device's single resource unit, so a device measures one
configuration at a time while devices run in parallel. Records come back as each configuration finishes
and are fsynced on the head. A device that leaves mid-sweep keeps its finished records; its unfinished
configurations are recorded `lost`, and `--resume FLEET_DIR` runs exactly those on it once it is back.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeprof.bench.execute import Events, ignore_events, resolve_auto_gpu_layers
from edgeprof.bench.plan import BenchConfig, Target, expand
from edgeprof.bench.runner import artifact_request, export_in_child, make_record, record_ids
from edgeprof.bench.sweep import SweepSpec, prune_unfinished
from edgeprof.errors import ConfigError, EdgeprofError
from edgeprof.export.in_child import ExportFailed
from edgeprof.fleet import FLEET_FILE, node
from edgeprof.fleet.credentials import FleetCredentials
from edgeprof.fleet.head import connect, list_devices
from edgeprof.fleet.shipping import CHUNK_BYTES, head_path, make_shipment
from edgeprof.paths import ensure_writable_dir
from edgeprof.results.records import Record, read_records
from edgeprof.results.rundir import RunDir, base_manifest, read_manifest
from edgeprof.results.summary import summarize, write_summary_csv

POLL_S = 0.5
RESULT_TIMEOUT_S = 30  # fetching a finished configuration's records and samples from its device

@dataclass
class DeviceRun:
    """One device's part of a fleet sweep: its node's description, its run directory and configurations."""

    name: str
    worker: str
    facts: dict
    run_dir: RunDir
    manifest: dict
    configs: list[BenchConfig]
    finished: set[str] = field(default_factory=set)
    lost: int = 0

    @property
    def device_info(self) -> dict:
        return self.manifest["device"]


@dataclass
class FleetResult:
    """What a fleet sweep left: its folder, one run directory and summary per device, how it ended."""

    folder: Path
    run_dirs: dict[str, Path]
    rows: dict[str, list[dict]]
    lost: dict[str, int]
    absent: list[str]
    exit_code: int = 0


def run_fleet(spec: SweepSpec | None, address: str, credentials: FleetCredentials, devices: list[str], out: Path,
              resume_dir: Path | None = None, on_event: Events = ignore_events) -> FleetResult:
    """Run `spec` on `devices` of the fleet at `address` (all joined devices when empty), or continue the
    fleet sweep in `resume_dir` (its own spec and devices; `spec` and `devices` are then not read)."""
    client = connect(address, credentials)
    try:
        return _FleetSweep(client, address, on_event).run(spec, devices, out, resume_dir)
    finally:
        client.close()


class _FleetSweep:
    def __init__(self, client, address: str, on_event: Events):
        self.client = client
        self.address = address
        self.on_event = on_event

    # -- planning -----------------------------------------------------------------------------------
    def run(self, spec: SweepSpec | None, devices: list[str], out: Path, resume_dir: Path | None) -> FleetResult:
        present = {d.name: d for d in list_devices(self.client)}
        if resume_dir is not None:
            fleet = _read_fleet_file(resume_dir)
            spec, devices, folder, fleet_id = SweepSpec.from_dict(fleet["sweep"]), fleet["devices"], resume_dir, fleet["fleet_id"]
        else:
            devices = devices or sorted(present)
            if not devices:
                raise ConfigError(f"no device has joined the fleet at {self.address}: run `edgeprof fleet join "
                                  f"{self.address}` on each device")
            fleet_id = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
            folder = ensure_writable_dir(out, "output folder") / f"fleet-{fleet_id}"
        absent = [name for name in devices if name not in present]
        if absent and resume_dir is None:
            raise ConfigError(f"device {absent[0]!r} is not in the fleet at {self.address} (joined: "
                              f"{', '.join(sorted(present)) or 'none'})")
        for name in absent:
            self.on_event("message", text=f"{name} has not joined the fleet: its unfinished configurations wait "
                                          "for the next --resume")
        if resume_dir is None:
            folder.mkdir(parents=True)
            _write_json(folder / FLEET_FILE, {"fleet_id": fleet_id, "address": self.address, "devices": devices,
                                              "sweep": spec.to_dict()})
        runs = [self._plan_device(spec, present[name], folder, fleet_id, resume_dir is not None)
                for name in devices if name in present]
        exports = self._export(spec, runs)
        for run in runs:
            self._ship(run, exports)
        exit_code = 0
        try:
            self._measure(spec, runs, exports, fleet_id)
        except KeyboardInterrupt:
            exit_code = 130
        result = FleetResult(folder, {}, {}, {}, absent, exit_code)
        for run in runs:
            run.manifest["status"] = ("interrupted" if exit_code == 130 else
                                      "incomplete: device lost" if run.lost else "complete")
            run.run_dir.write_manifest(run.manifest)
            rows = summarize(read_records(run.run_dir.records_path))
            write_summary_csv(rows, run.run_dir.summary_path)
            result.run_dirs[run.name], result.rows[run.name], result.lost[run.name] = run.run_dir.path, rows, run.lost
        if not result.exit_code and (absent or any(result.lost.values()) or
                                     any(r["status"] not in ("ok", "skipped") for rows in result.rows.values() for r in rows)):
            result.exit_code = 1
        return result

    def _plan_device(self, spec: SweepSpec, device, folder: Path, fleet_id: str, resuming: bool) -> DeviceRun:
        try:
            facts = self.client.submit(node.describe_node, workers=[device.address], pure=False,
                                       key=f"edgeprof-describe|{device.name}|{secrets.token_hex(4)}").result(timeout=120)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"device {device.name} did not describe itself within 120 s ({exc.__class__.__name__}); "
                              "see its `fleet join` output") from None
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
        fleet_info = {"address": self.address, "fleet_id": fleet_id, "device": device.name, "host": device.host}
        if resuming and (path / "manifest.json").exists():
            manifest = read_manifest(path)
            run_dir = RunDir(path, manifest["run_id"])
            finished, dropped = prune_unfinished(run_dir.records_path, spec.repetitions)
            manifest.setdefault("resumed", []).append({"finished_before": len(finished), "records_dropped": dropped})
            self.on_event("message", text=f"{device.name}: {len(finished)} configurations already finished"
                          + (f", {dropped} lost or partial record(s) dropped" if dropped else ""))
        else:
            path.mkdir(parents=True, exist_ok=True)
            run_dir = RunDir(path, f"{fleet_id}-{device.name}")
            device_info = {"profile": facts["profile"], "kind": facts["device_profile"]["kind"],
                           "emulated": facts["emulate"], "host": facts["host"], "fleet": fleet_info}
            manifest = base_manifest(run_dir.run_id, device_info)
            manifest.update(device_profile=facts["device_profile"], calibration=facts["calibration"],
                            jetson=facts["jetson"], fleet=fleet_info)
            finished = set()
        manifest.update(sweep=spec.to_dict(), configurations=len(configs))
        run_dir.write_manifest(manifest)
        return DeviceRun(device.name, device.address, facts, run_dir, manifest, configs, finished)

    # -- artifacts ------------------------------------------------------------------------------------
    def _export(self, spec: SweepSpec, runs: list[DeviceRun]) -> dict:
        """Export each artifact the devices need, once, on the head: request -> shipments or error text."""
        exports: dict = {}
        for run in runs:
            for config in run.configs:
                if config.skip:
                    continue
                for request in _requests(config, spec.fidelity, spec.calibration_text):
                    if request in exports:
                        continue
                    try:
                        artifact, parent = export_in_child(request, self._export_progress)
                        exports[request] = (make_shipment(artifact), make_shipment(parent) if parent else None)
                    except (EdgeprofError, ExportFailed) as exc:
                        exports[request] = str(exc)
        return exports

    def _export_progress(self, step: str, done: int, total: int) -> None:
        self.on_event("export", step=step, done=done, total=total)

    def _ship(self, run: DeviceRun, exports: dict) -> None:
        """Send the device every file it lacks; each arrives hashed, and is hashed again before use."""
        shipments = {s.artifact.sha256: s for entry in exports.values() if not isinstance(entry, str)
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
                                  key=f"edgeprof-ship|{run.name}|{secrets.token_hex(6)}").result(timeout=600)

    # -- measuring ----------------------------------------------------------------------------------
    def _measure(self, spec: SweepSpec, runs: list[DeviceRun], exports: dict, fleet_id: str) -> None:
        pending: dict = {}
        for run in runs:
            todo = [c for c in run.configs if record_ids(c, _head_artifact(c, exports))[1] not in run.finished]
            self.on_event("device_started", device=run.name, configurations=len(todo))
            for index, config in enumerate(todo):
                artifacts = _job_artifacts(config, spec.fidelity, exports, spec.calibration_text)
                job = node.MeasureJob(spec.to_dict(), config, artifacts,
                                      {"address": self.address, "fleet_id": fleet_id})
                future = self.client.submit(node.measure_configuration, job, pure=False, retries=0,
                                            resources={node.resource_name(run.name): 1}, priority=len(todo) - index,
                                            key=f"edgeprof-measure|{run.name}|{config.label}|{secrets.token_hex(4)}")
                pending[future] = (run, config)
        try:
            while pending:
                time.sleep(POLL_S)
                for future in [f for f in pending if f.done()]:
                    run, config = pending.pop(future)
                    self._collect(run, config, future, exports)
                try:
                    joined = {d.name for d in list_devices(self.client)}
                except (OSError, TimeoutError):  # the head itself is gone: nothing pending can finish
                    joined = set()
                for run in {run.name: run for run, _ in pending.values() if run.name not in joined}.values():
                    self._lose(run, pending, exports)
        except BaseException:
            self.client.cancel(list(pending))
            raise

    def _collect(self, run: DeviceRun, config: BenchConfig, future, exports: dict) -> None:
        writer = run.run_dir.writer()
        if future.status == "finished":
            try:  # the result still lives on the device: one that dies now takes it along
                result = future.result(timeout=RESULT_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - whatever the engine raises, the configuration is lost
                writer.append(self._lost_record(run, config, exports, f"its result could not be fetched ({exc!r})"))
                run.lost += 1
                self.on_event("config_finished", device=run.name, label=config.label)
                return
            for data in result["records"]:
                record = Record(**data)
                record.run_id = run.run_dir.run_id
                writer.append(record)
            _append_samples(run.run_dir.path / "samples.csv", result["samples_csv"])
            jobs = run.run_dir.path / "jobs"
            jobs.mkdir(exist_ok=True)
            for name, text in result["jobs"].items():  # the worker's job, events and native log, as a local run keeps
                (jobs / name).write_text(text)
            run.manifest["device"] = {**result["device_info"], "fleet": run.manifest["device"].get("fleet")}
            if result["sensors"]:
                run.manifest["sensors"] = result["sensors"]
            artifacts = {a["path"]: a for a in run.manifest.get("artifacts", [])}
            run.manifest["artifacts"] = list({**artifacts, **result["artifacts"]}.values())
            run.run_dir.write_manifest(run.manifest)
        else:
            error = f"the fleet task failed on {run.name}: {future.exception()!r}" if future.status == "error" else \
                f"the fleet task ended {future.status} on {run.name}"
            writer.append(make_record(run.run_dir.run_id, run.device_info, config, _head_artifact(config, exports),
                                      None, "failed", error=error))
        self.on_event("config_finished", device=run.name, label=config.label)

    def _lost_record(self, run: DeviceRun, config: BenchConfig, exports: dict, why: str) -> Record:
        return make_record(run.run_dir.run_id, run.device_info, config, _head_artifact(config, exports), None, "lost",
                           error=f"device {run.name} left the fleet before this configuration finished ({why}); "
                                 "`edgeprof sweep --resume` runs it again")

    def _lose(self, run: DeviceRun, pending: dict, exports: dict) -> None:
        """The device left: its unfinished configurations are `lost`, to be resumed on it later."""
        writer = run.run_dir.writer()
        for future, (owner, config) in list(pending.items()):
            if owner is not run:
                continue
            with contextlib.suppress(OSError, TimeoutError):  # a head that is gone has nothing left to cancel
                self.client.cancel([future])
            del pending[future]
            writer.append(self._lost_record(run, config, exports, "it is no longer joined"))
            run.lost += 1
        self.on_event("device_lost", device=run.name, lost=run.lost)


def _job_artifacts(config: BenchConfig, fidelity: bool, exports: dict, calibration_text: str | None = None) -> dict:
    if config.skip:
        return {}
    return {request: exports[request] for request in _requests(config, fidelity, calibration_text)}


def _requests(config: BenchConfig, fidelity: bool, calibration_text: str | None = None) -> set:
    """The artifacts a device's Runner asks for: the configuration's, and for a model file, the file as-is
    (its run key is its content's hash)."""
    requests = {artifact_request(config, config.quant, fidelity, calibration_text)}  # as the device's Runner asks
    if config.source.is_file:
        requests.add(artifact_request(config, "as-is"))
    return requests


def _head_artifact(config: BenchConfig, exports: dict):
    """The head's artifact for a configuration whose identity is its file (run keys need its hash)."""
    if not config.source.is_file or config.skip:
        return None
    entry = exports.get(artifact_request(config, "as-is"))
    return entry[0].artifact if entry and not isinstance(entry, str) else None


def _append_samples(path: Path, text: str) -> None:
    if not text:
        return
    lines = text.splitlines(keepends=True)
    with open(path, "a") as f:
        f.writelines(lines if f.tell() == 0 else lines[1:])


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

