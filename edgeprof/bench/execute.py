"""A whole run as one library call: a `SweepSpec` and an output folder in, a run directory out.

`execute` resolves the device, expands the sweep (per backend), picks the run's GPUs, starts the sensors
with their idle baseline, runs each configuration through the `Runner` (resuming where a run stopped),
and writes the manifest and summary. It reports what happens through `on_event(name, **details)` and
prints nothing, so the CLI, a test, a notebook or a remote task call it alike and render as they wish.

Events: `message` (text), `run_started` (configurations, run_dir), and the runner's `export`,
`config_started`, `config_progress`, `config_finished`, `config_already_done`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeprof.backends.base import uses_gpu
from edgeprof.bench.plan import expand
from edgeprof.bench.runner import Notify, Runner, RunOptions, ignore_events
from edgeprof.bench.sweep import SweepSpec, prune_unfinished
from edgeprof.hardware.devices import host_facts, offload_gpus, resolve_device
from edgeprof.errors import ConfigError
from edgeprof.lifetime import Stopped, stop_signals
from edgeprof.results.records import read_records
from edgeprof.results.rundir import RunDir, base_manifest, create_run_dir, read_manifest
from edgeprof.results.summary import summarize, write_summary_csv

Events = Notify  # on_event(name, **details)


@dataclass
class RunResult:
    """What a run left: its folder, one summary row per configuration, and how it ended."""

    run_dir: Path
    rows: list[dict]
    profile: str
    emulated: bool
    interrupted: bool = False
    exit_code: int = 0  # 0 all ran; 1 some configuration failed; 128 + signal (130 Ctrl-C) when stopped

    @property
    def failed(self) -> list[dict]:
        return [row for row in self.rows if row["status"] not in ("ok", "skipped")]


def execute(spec: SweepSpec, out: Path, resume_dir: Path | None = None, on_event: Events = ignore_events) -> RunResult:
    """Run `spec` into a new run directory under `out` (or continue `resume_dir`)."""
    facts = host_facts()
    if spec.emulate and not spec.device:
        raise ConfigError("--emulate needs --device NAME (the device to emulate); `edgeprof devices` lists them")
    if spec.sample_hz < 0:
        raise ConfigError(f"--sample-hz must be >= 0, got {spec.sample_hz:g}")
    profile = resolve_device(spec.device, facts, emulate=spec.emulate)
    from edgeprof.hardware.gpus import gpu_names as nvml_gpu_names

    gpu_names = nvml_gpu_names()
    has_gpu = bool(offload_gpus(gpu_names=gpu_names))
    grid = resolve_auto_gpu_layers(spec.grid, has_gpu and not spec.emulate and gpu_build())
    configs = expand(spec.models, spec.quants, spec.backends, grid, spec.allow_long_context)
    setup = prepare_device(spec, profile, facts, gpu_names, configs)
    configs, device_info = setup.configs, setup.device_info
    power, configs = power_modes(spec, profile.name, configs)
    finished: set[str] = set()
    if resume_dir is not None:
        manifest = read_manifest(resume_dir)
        run_dir = RunDir(resume_dir, manifest["run_id"])
        finished, dropped = prune_unfinished(run_dir.records_path, spec.repetitions)
        manifest.setdefault("resumed", []).append({"command": sys.argv, "finished_before": len(finished),
                                                   "partial_records_dropped": dropped})
        on_event("message", text=f"resuming {resume_dir}: {len(finished)} configurations already finished"
                 + (f", {dropped} partial record(s) of an interrupted configuration dropped" if dropped else ""))
    else:
        run_dir = create_run_dir(out)
        manifest = base_manifest(run_dir.run_id, device_info)
        # What analysis needs to predict this run later, on any machine: the profile and calibration in force.
        from edgeprof.hardware.devices import load_calibration

        manifest["device_profile"] = {"name": profile.name, "display_name": profile.display_name,
                                      "kind": profile.kind, "data": profile.data}
        manifest["calibration"] = load_calibration(profile.name)
    manifest["sweep"] = spec.to_dict()
    manifest["configurations"] = len(configs)
    sensors = start_sensors(spec.sample_hz, spec.idle_s, run_dir.path / "samples.csv", setup.gpu_ids, on_event)
    if sensors:
        manifest["sensors"] = sensors.describe()
    manifest["jetson"] = jetson_facts()
    run_dir.write_manifest(manifest)

    options = run_options(spec, setup)
    result = RunResult(run_dir.path, [], profile.name, spec.emulate)
    on_event("run_started", configurations=len(configs), run_dir=run_dir.path)
    runner = Runner(run_dir, device_info, options, on_event, sensors,
                    setup=(lambda config: power.apply(config.hp.power_mode) if config.hp.power_mode else {})
                    if power else None)
    try:
        # SIGTERM/SIGHUP (a `timeout`, a closed SSH session) stop like Ctrl-C; a power mode is restored either way
        with stop_signals(), power or contextlib.nullcontext():
            runner.run(configs, skip_run_keys=finished)
    except KeyboardInterrupt:
        result.interrupted, result.exit_code = True, 130  # the configuration in flight was discarded
    except Stopped as stop:
        result.interrupted, result.exit_code = True, stop.exit_code
    finally:
        if sensors:
            sensors.close()
            manifest["sensors"] = {**sensors.describe(), "sampler_cpu_s": sensors.sampler.thread_cpu_s,
                                   "samples": sensors.sampler.samples_taken}
        manifest["artifacts"] = list({**{a["path"]: a for a in manifest.get("artifacts", [])},
                                      **runner.artifacts}.values())
        if power:
            manifest["power_modes"] = power.describe()
        manifest["status"] = "interrupted" if result.interrupted else "complete"
        run_dir.write_manifest(manifest)
        result.rows = summarize(read_records(run_dir.records_path))
        write_summary_csv(result.rows, run_dir.summary_path)
    if not result.interrupted and result.failed:
        result.exit_code = 1  # measured configurations are kept; the code tells scripts that some failed
    return result


@dataclass
class DeviceSetup:
    """The device side of a run: the configurations as this device runs them (emulation applied), what the
    records say of the device, the cores an emulation pins to, and the GPUs (by UUID) the run uses."""

    configs: list
    device_info: dict
    cpu_affinity: tuple[int, ...] | None
    gpu_ids: list[str]


def prepare_device(spec: SweepSpec, profile, facts, gpu_names: list[str], configs: list) -> DeviceSetup:
    """Pick the run's GPUs and apply `--emulate` to `configs` on this host (a local run and a fleet device alike)."""
    run_gpus = _run_gpus(spec, configs)
    device_info = {"profile": profile.name, "kind": profile.kind, "emulated": spec.emulate, "host": facts.to_dict(),
                   "gpus": [{"index": g.index, "uuid": g.uuid, "name": g.name} for g in run_gpus]}
    affinity = None
    if spec.emulate:
        from edgeprof.hardware.emulation import plan_emulation

        emulation = plan_emulation(profile, facts, gpu_names)
        configs = [emulation.adapt(config) for config in configs]
        device_info["emulation"] = emulation.describe()
        affinity = tuple(emulation.cpu_affinity) if emulation.cpu_affinity else None
    gpu_ids = [g.uuid or str(g.index) for g in run_gpus]  # a driver that gives no UUID: the NVML index
    return DeviceSetup(configs, device_info, affinity, gpu_ids)


def power_modes(spec: SweepSpec, device: str, configs: list):
    """(the Jetson power-mode switch, the configurations grouped by mode in the order given) where the sweep
    has a `power_mode` axis, else (None, configs). Refused in one line where modes cannot be set."""
    modes = list(dict.fromkeys(c.hp.power_mode for c in configs if c.hp.power_mode))
    if not modes:
        return None, configs
    from edgeprof.hardware.power_modes import PowerModes

    power = PowerModes(pin_clocks=spec.jetson_clocks)
    power.check(modes, device, spec.emulate)
    order = {mode: index for index, mode in enumerate(modes)}
    return power, sorted(configs, key=lambda c: order.get(c.hp.power_mode, -1))  # each mode set once


def run_options(spec: SweepSpec, setup: DeviceSetup) -> RunOptions:
    from edgeprof.fidelity import FidelitySettings

    # the CLI checks the text before anything runs; a fleet device lacking a head's file fails fidelity only
    fidelity_settings = FidelitySettings(spec.fidelity_text, spec.fidelity_ctx, spec.fidelity_chunks)
    return RunOptions(repetitions=spec.repetitions, warmup=spec.warmup, timeout_s=spec.timeout_s,
                      cpu_affinity=setup.cpu_affinity, fidelity=spec.fidelity, fidelity_settings=fidelity_settings,
                      profile_ops=spec.profile_ops, calibration_text=spec.calibration_text,
                      energy_window_s=spec.energy_window_s, gpu_uuids=tuple(setup.gpu_ids),
                      sustain_s=spec.sustain_s, sustain_window_s=spec.sustain_window_s,
                      sustain_until_steady=spec.sustain_until_steady)


def resolve_auto_gpu_layers(grid: dict, has_gpu: bool) -> dict:
    """`--gpu-layers auto`: all layers where a GPU can take them and the build offloads, else none."""
    layers = [(-1 if has_gpu else 0) if v == "auto" else v for v in grid.get("gpu_layers", ["auto"])]
    return {**grid, "gpu_layers": list(dict.fromkeys(layers))}


def gpu_build() -> bool:
    from edgeprof.backends.llamacpp_lib import build_info

    return bool(build_info()["gpu_offload"])


def _run_gpus(spec: SweepSpec, configs) -> list:
    """The NVIDIA GPUs this run uses (and whose energy and memory it measures): none for a CPU-only run."""
    from edgeprof.hardware.gpus import list_gpus, select_gpus

    gpus = list_gpus()
    if spec.gpus and not gpus:
        raise ConfigError("--gpus: NVML lists no NVIDIA GPU on this host")
    if not any(uses_gpu(c.backend, c.hp) for c in configs):
        return []
    return select_gpus(spec.gpus, gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))


def start_sensors(sample_hz: float, idle_s: float, samples_path: Path, gpu_ids: list[str], on_event: Events):
    """Probe this host's sensors and start sampling (with the idle baseline), or None when off. Only the
    run's GPUs are sampled: an idle board beside them is not part of the run's energy."""
    if sample_hz == 0:
        return None
    from edgeprof.sensors.nvml import NvmlSensor
    from edgeprof.sensors.registry import candidate_sensors, probe_sensors
    from edgeprof.sensors.session import SensorSession

    nvml = NvmlSensor(sample_hz=sample_hz, gpu_uuids=gpu_ids)
    available, states = probe_sensors(candidate_sensors(nvml=nvml, sample_hz=sample_hz), sample_hz=sample_hz)
    session = SensorSession(available, states, sample_hz, idle_s, samples_path)
    if idle_s:
        on_event("message", text=f"measuring {max(idle_s, session.plan.required_window_s):g} s of idle baseline…")
    session.start()
    # a live view renders the samples this sampler takes anyway: nothing more is read, nothing in the worker
    on_event("sensors_started", latest=session.sampler.latest, metrics=[m for s in available for m in s.metrics()])
    return session


def jetson_facts() -> dict:
    from edgeprof.sensors.jetson import jetson_facts

    return jetson_facts()
