"""A device in a fleet: one Dask worker that measures one configuration at a time, and the tasks it runs.

`edgeprof fleet join` starts a worker with one thread, no nanny and one unit of a resource named after
the device (`edgeprof:<name>`, the detected profile by default). Every measurement the head submits asks
for that unit, so the scheduler's resource accounting never runs two measurements on one device, while
other devices run theirs in parallel. Dask's own periodic work is slowed to what a fleet needs (no
statistical profiler, no memory manager, 1 s ticks): on an idle node that cut the worker's CPU from
about 5 % of a core to a fraction of one percent (docs/benchmarks.md, results/fleet/).

`fleet join` gives up in one line when no head answers within its timeout or the head's certificate is
not of this fleet; once joined, a node whose head goes away waits and joins the restarted head as a fresh
worker (Dask workers do not reconnect on their own).

The tasks (`describe_node`, the shipping steps, `measure_configuration`) are plain functions of this
module; the device's settings reach them through the worker's `DeviceNode` plugin, not a global.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin

from edgeprof.errors import ConfigError
from edgeprof.fleet import resource_name
from edgeprof.fleet.head import check_address
from edgeprof.fleet.shipping import Shipment

PLUGIN_NAME = "edgeprof-device"

# What an edgeprof node needs of Dask's periodic machinery, and no more (measured: results/fleet/).
LEAN_WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,  # a 10 ms stack sampler: most of an idle worker's CPU
    "distributed.admin.tick.interval": "1s",  # event-loop blockage check, every 20 ms by default
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.system-monitor.disk": False,
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.worker.memory.monitor-interval": "1s",
}


@dataclass(frozen=True)
class NodeSettings:
    """What `fleet join` was told: the device's name in the fleet, its profile, whether that profile is
    emulated on this host, and where shipped artifacts and scratch runs live."""

    name: str
    profile: str
    emulate: bool
    store: Path


class DeviceNode(WorkerPlugin):
    """The Dask worker plugin that carries a node's settings to the tasks it runs."""

    name = PLUGIN_NAME

    def __init__(self, settings: NodeSettings):
        self.settings = settings

    def setup(self, worker) -> None:  # the WorkerPlugin protocol
        self.settings.store.mkdir(parents=True, exist_ok=True)

    def teardown(self, worker) -> None:
        return None


JOIN_TIMEOUT_S = 60.0  # how long `fleet join` looks for its head before giving up
REJOIN_MAX_WAIT_S = 10.0  # longest pause between attempts to reach a head that went away


def serve_node(address: str, security, settings: NodeSettings, timeout_s: float = JOIN_TIMEOUT_S,
               say=print) -> None:
    """Join the fleet at `address` and serve until SIGINT/SIGTERM, rejoining a head that restarts.

    The first join gives up after `timeout_s` (0: never) with one line; a head whose certificate this
    device does not trust, or that refuses this device's, ends it at once, so a wrong bundle costs the
    head one failed handshake, not hundreds. Once joined, a device whose head goes away waits for it
    (attempts spaced up to `REJOIN_MAX_WAIT_S`) and joins again as a fresh worker: Dask workers do not
    reconnect, and a restarted head has forgotten them anyway."""
    import asyncio

    from edgeprof.fleet.serving import quiet_engine_logs

    quiet_engine_logs()
    asyncio.run(_serve_node(address, security, settings, timeout_s, say))


async def _serve_node(address: str, security, settings: NodeSettings, timeout_s: float, say) -> None:
    import asyncio

    import dask
    from distributed import Worker
    from distributed.utils import get_ip

    from edgeprof.fleet.serving import NO_HTTP_ADDRESS, NO_HTTP_CONFIG, stop_on_signals

    # Listen only on the interface that reaches the head (TLS, the head's certificate only), not on every one.
    host = get_ip(check_address(address)[0])
    stop = asyncio.Event()
    current: list = []
    stop_on_signals(stop, lambda: [asyncio.ensure_future(w.close()) for w in current])
    joined_before = False
    with dask.config.set({**NO_HTTP_CONFIG, **LEAN_WORKER_CONFIG}):
        while not stop.is_set():
            if not await _reach_head(address, security, None if joined_before else timeout_s, stop):
                return
            worker = Worker(address, nthreads=1, name=settings.name, resources={resource_name(settings.name): 1},
                            host=host, security=security, plugins=[DeviceNode(settings)], memory_limit=0,
                            dashboard=False, dashboard_address=NO_HTTP_ADDRESS,
                            local_directory=str(settings.store / "engine"), death_timeout=timeout_s or None)
            current[:] = [worker]
            try:
                await worker
            except Exception as exc:  # noqa: BLE001 - classified into one line below
                if stop.is_set():  # Ctrl-C while joining
                    return
                if "name taken" in _causes(exc) and not joined_before:
                    raise ConfigError(f"a device named {settings.name!r} is already in the fleet at {address}: give "
                                      "this one another --name") from None
                if not joined_before:
                    raise ConfigError(f"could not join the fleet at {address}: {_causes(exc)}") from None
                await _pause(stop, REJOIN_MAX_WAIT_S)  # e.g. the old registration is not yet gone
                continue
            say(f"{'rejoined' if joined_before else 'joined'} {address} as {settings.name}")
            joined_before = True
            await worker.finished()
            if not stop.is_set():
                say(f"lost the head at {address}; waiting for it to come back (Ctrl-C leaves)")


async def _reach_head(address: str, security, timeout_s: float | None, stop) -> bool:
    """Wait until the head answers a TLS connection (True), or `stop` is set (False); one line on giving up."""
    from distributed.comm import connect
    from distributed.comm.core import FatalCommClosedError

    args = security.get_connection_args("worker")
    deadline = time.monotonic() + timeout_s if timeout_s else None
    pause = 0.5
    while not stop.is_set():
        attempt_s = 5.0 if deadline is None else max(min(5.0, deadline - time.monotonic()), 0.1)
        try:
            comm = await connect(address, timeout=attempt_s, **args)
        except FatalCommClosedError:
            raise ConfigError(f"the head at {address} presented a certificate this device's credentials do not "
                              "trust: copy the device/ folder of the fleet that head serves") from None
        except OSError as exc:
            if "certificate" in _causes(exc).lower() or "alert" in _causes(exc).lower():
                raise ConfigError(f"the head at {address} refused this device's certificate: copy the device/ folder "
                                  "of the fleet that head serves") from None
        else:
            await comm.close()
            return True
        if deadline is not None and time.monotonic() >= deadline:
            raise ConfigError(f"no fleet head answered at {address} within {timeout_s:g} s: is `edgeprof fleet head` "
                              "running there and reachable? (--timeout waits longer, 0 forever)")
        await _pause(stop, pause)
        pause = min(pause * 2, REJOIN_MAX_WAIT_S)
    return False


async def _pause(stop, seconds: float) -> None:
    import asyncio
    import contextlib

    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _causes(exc: BaseException | None) -> str:
    """An exception and its causes in one line (Dask wraps the reason a worker could not start)."""
    texts = []
    while exc is not None and len(texts) < 8:
        texts.append(str(exc) or exc.__class__.__name__)
        exc = exc.__cause__ or exc.__context__
    return "; ".join(dict.fromkeys(texts))


def _settings() -> NodeSettings:
    from distributed import get_worker

    return get_worker().plugins[PLUGIN_NAME].settings


# -- tasks the head submits ---------------------------------------------------------------------------


def describe_node() -> dict:
    """What the head needs to plan for this device and to write its manifest."""
    from edgeprof import __version__
    from edgeprof.bench.execute import gpu_offload, jetson_facts, profile_facts
    from edgeprof.hardware.devices import host_facts, resolve_device
    from edgeprof.hardware.gpus import gpu_names as nvml_gpu_names

    settings = _settings()
    facts = host_facts()
    gpu_names = nvml_gpu_names()
    profile = resolve_device(settings.profile, facts, emulate=settings.emulate, gpu_names=gpu_names)
    try:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    except ImportError:
        providers = []
    return {"name": settings.name, "profile": profile.name, "emulate": settings.emulate,
            "edgeprof_version": __version__, "host": facts.to_dict(), "physical_cores": facts.physical_cores,
            "gpu_offload": gpu_offload(gpu_names, settings.emulate), "ort_providers": providers,
            **profile_facts(profile), "jetson": jetson_facts()}


def missing_files(shipment: Shipment) -> list[str]:
    from edgeprof.fleet import shipping

    return shipping.missing_files(_settings().store, shipment)


def write_chunk(shipment: Shipment, name: str, offset: int, data: bytes) -> int:
    from edgeprof.fleet import shipping

    shipping.write_chunk(_settings().store, shipment, name, offset, data)
    return len(data)


def seal_file(shipment: Shipment, name: str) -> None:
    from edgeprof.fleet import shipping

    shipping.seal_file(_settings().store, shipment, name)


@dataclass
class MeasureJob:
    """One configuration for one device, as the head planned it."""

    spec: dict  # the SweepSpec (run settings); the device and emulation are the node's own
    config: object  # the BenchConfig
    artifacts: dict  # ArtifactRequest -> (Shipment, parent Shipment | None), or the export's error text
    fleet: dict = field(default_factory=dict)  # address, fleet run id: written into the records' device


def measure_configuration(job: MeasureJob) -> dict:
    """Measure one configuration here as a local run would (sensors, emulation, worker child), and return
    its records, the samples and what the engine itself cost meanwhile."""
    from edgeprof.bench.execute import prepare_device, run_options, start_sensors
    from edgeprof.bench.runner import Runner, ignore_events
    from edgeprof.bench.sweep import SweepSpec
    from edgeprof.hardware.devices import host_facts, resolve_device
    from edgeprof.results.rundir import create_run_dir
    from edgeprof.hardware.gpus import gpu_names as nvml_gpu_names

    settings = _settings()
    spec = replace(SweepSpec.from_dict(job.spec), device=settings.profile, emulate=settings.emulate)
    facts = host_facts()
    gpu_names = nvml_gpu_names()
    profile = resolve_device(spec.device, facts, emulate=spec.emulate, gpu_names=gpu_names)
    setup = prepare_device(spec, profile, facts, gpu_names, [job.config])
    run_dir = create_run_dir(settings.store / "runs")
    sensors = start_sensors(spec.sample_hz, spec.idle_s, run_dir.path / "samples.csv", setup.gpu_ids,
                            ignore_events)
    device_info = {**setup.device_info, "fleet": {**job.fleet, "device": settings.name}}
    try:
        runner = Runner(run_dir, device_info, run_options(spec, setup), sensors=sensors,
                        artifacts=ShippedArtifacts(settings.store, job.artifacts))
        meter = EngineMeter()
        records = runner.run_one(setup.configs[0])
        engine = meter.stop()
    finally:
        if sensors:
            sensors.close()
    for record in records:
        if record.status == "ok":
            record.metrics.update(engine)
    samples = run_dir.path / "samples.csv"
    jobs = {path.name: _tail(path) for path in sorted((run_dir.path / "jobs").glob("*")) if path.is_file()}
    result = {"records": [asdict(r) for r in records], "device_info": device_info, "jobs": jobs,
              "sensors": ({**sensors.describe(), "sampler_cpu_s": sensors.sampler.thread_cpu_s} if sensors else None),
              "samples_csv": samples.read_text() if samples.exists() else "",
              "artifacts": runner.artifacts, "engine": engine}
    shutil.rmtree(run_dir.path, ignore_errors=True)
    return result


def _tail(path: Path, limit: int = 256 << 10) -> str:
    """A job file for the head's `jobs/` folder (a runaway native log is cut to its last 256 KiB)."""
    with open(path, "rb") as f:
        f.seek(max(path.stat().st_size - limit, 0))
        return f.read().decode(errors="replace")


class ShippedArtifacts:
    """The Runner's artifact provider on a device: the head's shipment, verified right before use."""

    def __init__(self, store: Path, entries: dict):
        self.store = store
        self.entries = entries

    def __call__(self, request, progress) -> tuple:
        from edgeprof.export.in_child import ExportFailed
        from edgeprof.fleet.shipping import verify

        entry = self.entries.get(request)
        if entry is None:
            raise ExportFailed(f"the head shipped no artifact for {request.spec} {request.quant}")
        if isinstance(entry, str):  # the head's export failed: the same failure the local run would record
            raise ExportFailed(entry)
        shipment, parent = entry
        return verify(self.store, shipment), verify(self.store, parent) if parent else None


class EngineMeter:
    """CPU the engine's own threads spent while a configuration was measured (this node process's threads
    other than the one running the task and edgeprof's sampler), and the node process's resident memory.
    Without a nanny the engine is this one process; the worker child that measures is not counted."""

    def __init__(self):
        import psutil

        self._process = psutil.Process()
        self._start = self._thread_times()
        self._t0 = time.monotonic()

    def _thread_times(self) -> dict[int, float]:
        ours = {threading.get_native_id(), *(t.native_id for t in threading.enumerate()
                                             if t.name.startswith("edgeprof-"))}
        return {t.id: t.user_time + t.system_time for t in self._process.threads() if t.id not in ours}

    def stop(self) -> dict:
        end = self._thread_times()
        wall = max(time.monotonic() - self._t0, 1e-9)
        cpu = sum(seconds - self._start.get(tid, 0.0) for tid, seconds in end.items())
        return {"fleet_engine_cpu_share": round(cpu / wall, 5),
                "fleet_node_rss_mb": round(self._process.memory_info().rss / 2**20, 1),
                "fleet_engine_window_s": round(wall, 3)}
