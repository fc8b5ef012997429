"""A whole run on this host as one library call: a `SweepSpec` and an output folder in, a run directory out.

`execute` resolves the device, expands the sweep (per backend), picks the run's GPUs, starts the sensors
with their idle baseline, and hands the configurations to a `RunSession` (manifest, resume, records, the
end) with this host's launcher (a worker process per configuration). It reports what happens through
`on_event(name, **details)` and prints nothing, so the CLI, a test, a notebook or a remote task call it
alike and render as they wish.

Events: `message` (text), `run_started` (configurations, run_dir), and the runner's and session's `export`,
`config_started`, `config_progress`, `config_finished`, `config_already_done`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from edgeprof.backends.base import uses_gpu
from edgeprof.bench.plan import expand
from edgeprof.bench.runner import Notify, Runner, RunOptions, ignore_events
from edgeprof.bench.session import Ending, LocalLauncher, RunSession, SessionResult, drive
from edgeprof.bench.sweep import SweepSpec
from edgeprof.errors import ConfigError
from edgeprof.hardware.devices import host_facts, offload_gpus, resolve_device
from edgeprof.lifetime import Stopped, stop_signals
from edgeprof.results.rundir import Manifest, create_run_dir

Events = Notify  # on_event(name, **details)


@dataclass
class RunResult(SessionResult):
    """A local run's `SessionResult`, with the device profile it ran as and whether it was emulated."""

    profile: str = ""
    emulated: bool = False


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
    grid = resolve_auto_gpu_layers(spec.grid, gpu_offload(gpu_names, spec.emulate))
    configs = expand(spec.models, spec.quants, spec.backends, grid, spec.allow_long_context)
    setup = prepare_device(spec, profile, facts, gpu_names, configs)
    configs, device_info = setup.configs, setup.device_info
    power, configs = power_modes(spec, profile.name, configs)
    if resume_dir is not None:
        session = RunSession.resume(resume_dir, spec, len(configs), on_event)
    else:
        run_dir = create_run_dir(out)
        manifest = Manifest(run_dir.run_id, device_info, **profile_facts(profile))
        session = RunSession.create(run_dir, manifest, spec, len(configs), on_event)
    run_dir, manifest = session.run_dir, session.manifest
    sensors = start_sensors(spec.sample_hz, spec.idle_s, run_dir.samples_path, setup.gpu_ids, on_event)
    if sensors:
        manifest.sensors = sensors.describe()
    manifest.jetson = jetson_facts()
    session.save()

    on_event("run_started", configurations=len(configs), run_dir=run_dir.path)
    runner = Runner(run_dir, device_info, run_options(spec, setup), on_event, sensors,
                    setup=(lambda config: power.apply(config.hp.power_mode) if config.hp.power_mode else {})
                    if power else None)
    ending = Ending()
    try:
        # SIGTERM/SIGHUP (a `timeout`, a closed SSH session) stop like Ctrl-C; a power mode is restored either way
        with stop_signals(), power or contextlib.nullcontext():
            drive([(session, configs)], LocalLauncher(runner))
    except KeyboardInterrupt:
        ending = Ending(130)  # the configuration in flight was discarded
    except Stopped as stop:
        ending = Ending(stop.exit_code)
    finally:
        if sensors:
            sensors.close()
            manifest.sensors = {**sensors.describe(), "sampler_cpu_s": sensors.sampler.thread_cpu_s,
                                "samples": sensors.sampler.samples_taken}
        manifest.add_artifacts(runner.artifacts)
        if power:
            manifest.power_modes = power.describe()
        result = session.finish(ending)
    return RunResult(**result.__dict__, profile=profile.name, emulated=spec.emulate)


def gpu_offload(gpu_names: list[str], emulate: bool) -> bool:
    """Whether this host can put layers on a GPU for a run: a GPU that takes layers, a llama.cpp build that
    offloads, and no emulation (an emulated device runs on its CPU cores). A local run and a fleet device
    decide `--gpu-layers auto` and plan with this."""
    return bool(offload_gpus(gpu_names=gpu_names)) and not emulate and gpu_build()


def profile_facts(profile) -> dict:
    """What analysis needs to predict a run later, on any machine: the device profile and calibration in
    force, as the manifest's `device_profile` and `calibration` (a local run's and a fleet device's)."""
    from edgeprof.hardware.devices import load_calibration

    return {"device_profile": {"name": profile.name, "display_name": profile.display_name, "kind": profile.kind,
                               "data": profile.data},
            "calibration": load_calibration(profile.name)}


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
    from edgeprof.backends.llamacpp.lib import build_info

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
