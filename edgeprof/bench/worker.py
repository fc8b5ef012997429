"""The child process that runs one configuration: `python -m edgeprof.bench.worker JOB.json EVENTS.jsonl`.

Running each configuration in its own process means a native abort, a segfault or the OOM killer
takes down only this child; the parent turns that into a failed record and the sweep goes on.
Events are appended and flushed one per line as they happen, so finished repetitions survive a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from edgeprof.errors import EdgeprofError
from edgeprof.lifetime import die_with_parent, emit_event

EXIT_USER_ERROR = 3
EXIT_CRASH = 4


def run_job(job: dict, events) -> int:
    if job.get("cpu_affinity"):
        os.sched_setaffinity(0, job["cpu_affinity"])  # emulating a device with fewer cores
    if job["backend"] == "llama.cpp":
        from edgeprof.backends.llamacpp_lib import load_llama_cpp

        load_llama_cpp()  # before numpy: see load_llama_cpp's docstring
    if job.get("mode") == "fidelity":  # a job of its own, after the measurement (see Runner._fidelity)
        from edgeprof.config import Hyperparameters

        hp = Hyperparameters.from_dict(job["hyperparameters"])
        emit_event(events, {"event": "extras", "metrics": _extra(lambda: _fidelity(job, hp, events), "fidelity")})
        return 0
    from edgeprof.backends.base import open_session, uses_gpu
    from edgeprof.bench.measure import make_depth_tokens, make_prompts, run_repetition
    from edgeprof.config import Hyperparameters

    hp = Hyperparameters.from_dict(job["hyperparameters"])
    start = time.perf_counter()
    session = open_session(job["backend"], job["model_path"], hp)
    loaded = time.perf_counter()
    try:
        info = {**session.info(), "worker_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        emit_event(events, {"event": "loaded", "load_ms": (loaded - start) * 1e3, "info": info,
                       "phase": ["load", start, loaded]})
        prompts = make_prompts(hp, session.n_vocab, job.get("seed", 0))
        depth_tokens = make_depth_tokens(hp, session.n_vocab, job.get("seed", 0))
        warmup_start = time.perf_counter()
        for _ in range(job.get("warmup", 1)):
            _progress(events, "warm-up")
            with _prefill_progress(session, events):  # untimed: a long prefill shows its tokens
                run_repetition(session, prompts, hp, depth_tokens)
        emit_event(events, {"event": "warmup", "phase": ["warmup", warmup_start, time.perf_counter()]})
        timed = []
        for index in range(job["repetitions"]):
            _progress(events, f"repetition {index + 1}/{job['repetitions']}")
            metrics = run_repetition(session, prompts, hp, depth_tokens)
            timed.append(metrics.phases())
            emit_event(events, {"event": "repetition", "index": index, "metrics": metrics.to_dict(),
                           "phases": metrics.phases(), "finished_at": time.time()})
        if job.get("sustain"):
            _sustain(job, session, prompts, hp, depth_tokens, events)
        if uses_gpu(job["backend"], hp):
            from edgeprof.hardware.gpus import process_gpu_memory_mb

            own = process_gpu_memory_mb(os.getpid())
            emit_event(events, {"event": "extras", "metrics": {"gpu_mem_mb": own} if own is not None else
                           {"gpu_mem_mb_unavailable": "NVML does not attribute GPU memory to this process here"}})
        if job.get("energy_pass"):
            from edgeprof.bench.energy_pass import EnergyPassPlan, run_energy_pass

            plan = EnergyPassPlan(**job["energy_pass"])
            _progress(events, "energy pass")
            emit_event(events, {"event": "energy_pass", "plan": plan.to_dict(),
                           "phases": run_energy_pass(session, prompts, hp, plan, timed, depth_tokens)})
        if job.get("profile_ops"):
            session.close()  # the profiled pass opens its own session; do not hold two copies of the weights
            _progress(events, "operator profile")
            extras = _extra(lambda: {"op_profile": _profile(job, hp, prompts)}, "op_profile")
            emit_event(events, {"event": "extras", "metrics": extras})
    finally:
        session.close()
    return 0


def _sustain(job: dict, session, prompts, hp, depth_tokens, events) -> None:
    """Whole repetitions back to back for the planned time (or until the parent's stop file appears); one
    event per window, its edges on the sampler's clock."""
    from edgeprof.bench.measure import run_repetition
    from edgeprof.bench.sustain import SustainPlan, repetition_totals, run_sustain

    plan = SustainPlan(**job["sustain"])

    def emit(event: dict) -> None:
        emit_event(events, event)
        _progress(events, "sustained", int(event["since_start_s"]), int(plan.duration_s), unit="s")

    _progress(events, "sustained", 0, int(plan.duration_s), unit="s")
    run_sustain(lambda: repetition_totals(run_repetition(session, prompts, hp, depth_tokens)), plan, emit)


def _progress(events, step: str, done: int | None = None, total: int | None = None, unit: str = "tokens") -> None:
    """Where the worker is, for the parent's progress display (written between timed regions only)."""
    emit_event(events, {"event": "progress", "step": step, "done": done, "total": total, "unit": unit})


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


def _profile(job: dict, hp, prompts) -> dict:
    """The backend's operator profile: ONNX Runtime's own profiler, or llama.cpp's eval callback (with
    CUPTI's kernel times on a GPU where cupti-python is installed)."""
    if job["backend"] == "onnxruntime":
        from edgeprof.backends.ort_profile import profile_ops

        return profile_ops(job["model_path"], hp, prompts)
    from edgeprof.backends.base import uses_gpu
    from edgeprof.backends.llamacpp_profile import profile_ops

    if not uses_gpu(job["backend"], hp):
        return profile_ops(job["model_path"], hp, prompts)
    from edgeprof.backends.cuda_kernels import kernel_timer

    with kernel_timer() as timer:
        return profile_ops(job["model_path"], hp, prompts, kernel_timer=timer)


def _fidelity(job: dict, hp, events) -> dict:
    from edgeprof.fidelity import FidelitySettings, measure_fidelity

    spec = job["fidelity"]
    result = measure_fidelity(job["backend"], job["model_path"], spec["parent_path"], spec["parent_quant"], hp,
                              FidelitySettings(**spec["settings"]), Path(spec["cache"]),
                              lambda step, done, total: _progress(events, step, done, total, unit="chunks"))
    return result.to_metrics()


def main(argv: list[str]) -> int:
    die_with_parent()  # first: a worker must never outlive edgeprof (see edgeprof.lifetime)
    job = json.loads(Path(argv[0]).read_text())
    with open(argv[1], "a") as events:
        try:
            return run_job(job, events)
        except EdgeprofError as exc:
            emit_event(events, {"event": "error", "status": "failed", "message": str(exc)})
            return EXIT_USER_ERROR
        except MemoryError:
            emit_event(events, {"event": "error", "status": "oom", "message": "MemoryError in the worker"})
            return EXIT_CRASH
        except Exception as exc:  # noqa: BLE001 - any failure becomes a record, not a lost sweep
            last = traceback.format_exc().strip().splitlines()[-1]
            emit_event(events, {"event": "error", "status": "failed", "message": f"{type(exc).__name__}: {exc}",
                           "detail": last})
            return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
