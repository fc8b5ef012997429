"""The child process that runs one configuration: `python -m edgeprof.bench.worker JOB.json EVENTS.jsonl`.

Running each configuration in its own process means a native abort, a segfault or the OOM killer
takes down only this child; the parent turns that into a failed record and the sweep goes on.
Events are appended and flushed one per line as they happen, so finished repetitions survive a crash.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from pathlib import Path

from edgeprof.bench.contracts import (EnergyPassDone, Extras, Failed, Loaded, Progress, Repetition, SustainWindow,
                                      WarmedUp, WorkerJob)
from edgeprof.errors import EdgeprofError
from edgeprof.lifetime import die_with_parent

EXIT_USER_ERROR = 3
EXIT_CRASH = 4


def run_job(job: WorkerJob, events) -> int:
    if job.cpu_affinity:
        os.sched_setaffinity(0, job.cpu_affinity)  # emulating a device with fewer cores
    from edgeprof.backends.registry import get as get_backend

    backend = get_backend(job.backend)
    backend.prepare_worker()  # llama.cpp: loaded before numpy (see load_llama_cpp's docstring)
    if job.mode == "fidelity":  # a job of its own, after the measurement (see Runner._fidelity)
        from edgeprof.config import Hyperparameters

        hp = Hyperparameters.from_dict(job.hyperparameters, backend.options.names())
        Extras(_extra(lambda: _fidelity(job, hp, events), "fidelity")).emit(events)
        return 0
    from edgeprof.backends.base import open_session, uses_gpu
    from edgeprof.bench.measure import make_depth_tokens, make_prompts, run_repetition
    from edgeprof.config import Hyperparameters

    hp = Hyperparameters.from_dict(job.hyperparameters, backend.options.names())
    start = time.perf_counter()
    session = open_session(job.backend, job.model_path, hp)
    loaded = time.perf_counter()
    try:
        info = {**session.info(), "worker_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        Loaded((loaded - start) * 1e3, info, ["load", start, loaded]).emit(events)
        prompts = make_prompts(hp, session.n_vocab, job.seed)
        depth_tokens = make_depth_tokens(hp, session.n_vocab, job.seed)
        warmup_start = time.perf_counter()
        for _ in range(job.warmup):
            _progress(events, "warm-up")
            with _prefill_progress(session, events):  # untimed: a long prefill shows its tokens
                run_repetition(session, prompts, hp, depth_tokens)
        WarmedUp(["warmup", warmup_start, time.perf_counter()]).emit(events)
        timed = []
        for index in range(job.repetitions):
            _progress(events, f"repetition {index + 1}/{job.repetitions}")
            metrics = run_repetition(session, prompts, hp, depth_tokens)
            timed.append(metrics.phases())
            Repetition(index, metrics.to_dict(), metrics.phases(), time.time()).emit(events)
        if job.sustain:
            _sustain(job, session, prompts, hp, depth_tokens, events)
        if uses_gpu(job.backend, hp):
            from edgeprof.hardware.gpus import process_gpu_memory_mb

            own = process_gpu_memory_mb(os.getpid())
            Extras({"gpu_mem_mb": own} if own is not None else
                   {"gpu_mem_mb_unavailable": "NVML does not attribute GPU memory to this process here"}).emit(events)
        if job.energy_pass:
            from edgeprof.bench.energy_pass import EnergyPassPlan, run_energy_pass

            plan = EnergyPassPlan(**job.energy_pass)
            _progress(events, "energy pass")
            EnergyPassDone(plan.to_dict(), run_energy_pass(session, prompts, hp, plan, timed, depth_tokens)).emit(events)
        if job.profile_ops:
            session.close()  # the profiled pass opens its own session; do not hold two copies of the weights
            _progress(events, "operator profile")
            Extras(_extra(lambda: {"op_profile": _profile(job, hp, prompts)}, "op_profile")).emit(events)
    finally:
        session.close()
    return 0


def _sustain(job: WorkerJob, session, prompts, hp, depth_tokens, events) -> None:
    """Whole repetitions back to back for the planned time (or until the parent's stop file appears); one
    event per window, its edges on the sampler's clock."""
    from edgeprof.bench.measure import run_repetition
    from edgeprof.bench.sustain import SustainPlan, repetition_totals, run_sustain

    plan = SustainPlan(**job.sustain)

    def emit(event: dict) -> None:
        SustainWindow(**{k: v for k, v in event.items() if k != "event"}).emit(events)
        _progress(events, "sustained", int(event["since_start_s"]), int(plan.duration_s), unit="s")

    _progress(events, "sustained", 0, int(plan.duration_s), unit="s")
    run_sustain(lambda: repetition_totals(run_repetition(session, prompts, hp, depth_tokens)), plan, emit)


def _progress(events, step: str, done: int | None = None, total: int | None = None, unit: str = "tokens") -> None:
    """Where the worker is, for the parent's progress display (written between timed regions only)."""
    Progress(step, done, total, unit).emit(events)


@contextlib.contextmanager
def _prefill_progress(session, events, every_s: float = 0.5):
    """Report prefill tokens at most every `every_s` (and at the end) where the backend can tell them."""
    if not hasattr(session, "prefill_progress"):
        yield
        return
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            _progress(events, "warm-up prefill", done, total)

    session.prefill_progress = report
    try:
        yield
    finally:
        session.prefill_progress = None


def _extra(compute, name: str) -> dict:
    """Fidelity and the operator profile are extras: their failure is noted, the measured figures stay."""
    try:
        return compute()
    except Exception as exc:  # noqa: BLE001
        return {f"{name}_error": f"{type(exc).__name__}: {exc}"}


def _profile(job: WorkerJob, hp, prompts) -> dict:
    """The backend's operator profile (`OpProfile`; ONNX Runtime's own profiler, or llama.cpp's eval callback
    with CUPTI's kernel times on a GPU where cupti-python is installed), as the record stores it."""
    from edgeprof.backends.registry import get as get_backend

    return get_backend(job.backend).profile_ops(job.model_path, hp, prompts).to_dict()


def _fidelity(job: WorkerJob, hp, events) -> dict:
    from edgeprof.fidelity import FidelitySettings, measure_fidelity

    spec = job.fidelity
    result = measure_fidelity(job.backend, job.model_path, spec.parent_path, spec.parent_quant, hp,
                              FidelitySettings(**spec.settings), Path(spec.cache),
                              lambda step, done, total: _progress(events, step, done, total, unit="chunks"))
    return result.to_metrics()


def main(argv: list[str]) -> int:
    die_with_parent()  # first: a worker must never outlive edgeprof (see edgeprof.lifetime)
    with open(argv[1], "a") as events:
        try:
            return run_job(WorkerJob.read(Path(argv[0])), events)
        except EdgeprofError as exc:
            Failed(str(exc)).emit(events)
            return EXIT_USER_ERROR
        except MemoryError:
            Failed("MemoryError in the worker", status="oom").emit(events)
            return EXIT_CRASH
        except Exception as exc:  # noqa: BLE001 - any failure becomes a record, not a lost sweep
            last = traceback.format_exc().strip().splitlines()[-1]
            Failed(f"{type(exc).__name__}: {exc}", detail=last).emit(events)
            return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
