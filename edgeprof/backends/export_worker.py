"""Child process for exports and for reading users' model files, by the backend that owns the format:
`python -m edgeprof.backends.export_worker JOB.json EVENTS.jsonl`.

Exports run torch and optimum, ONNX Runtime's quantizers and the HF → GGUF conversion; a user's GGUF or
ONNX file is parsed by third-party readers. Any of them can crash natively, and the parent also samples
the sensors: so this work runs here, and a crash fails one configuration instead of the sweep. (It also
keeps torch out of the parent's memory.) Events, one JSON line each: `progress`, then `artifact` (or
`checked` with a file's metadata), or `error` with `user` set for an `EdgeprofError`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from edgeprof.lifetime import emit_event

EXIT_USER_ERROR = 3
EXIT_FAILED = 4


def run(job: dict, events) -> int:
    from edgeprof.errors import EdgeprofError

    try:
        if job["action"] == "check":
            emit_event(events, {"event": "checked", "metadata": _check(Path(job["path"]), job["kind"])})
            return 0
        artifact, parent = _export(job, events)
        emit_event(events, {"event": "artifact", "artifact": asdict(artifact),
                       "parent": asdict(parent) if parent is not None else None})
        return 0
    except EdgeprofError as exc:
        emit_event(events, {"event": "error", "user": True, "message": str(exc)})
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 - an exporter's own failure (optimum, torch) fails one configuration
        first = str(exc).splitlines()[0] if str(exc) else ""
        emit_event(events, {"event": "error", "user": False, "message": f"export failed: {type(exc).__name__}: {first}"})
        return EXIT_FAILED


def _check(path: Path, kind: str) -> dict:
    """A user's file checked before any native loader sees it, by the backend that reads its format; its
    metadata comes back (JSON-safe; GGUF's, empty for ONNX)."""
    from edgeprof.backends.registry import for_format

    return for_format(kind).check_file(path)


def _export(job: dict, events):
    """The artifact, and with `parent` set the unquantized one it is judged against (None where there is none)."""
    from edgeprof.models.source import resolve

    source = resolve(job["spec"], job.get("seed", 0))

    def progress(step: str, done: int, total: int) -> None:
        emit_event(events, {"event": "progress", "step": step, "done": done, "total": total})

    from edgeprof.backends.registry import for_format

    backend = for_format(job["format"])  # the exporter is the one the format's backend registered
    artifact = backend.export(source, job["quant"], progress=progress, calibration_text=job.get("calibration_text"))
    wanted = backend.parent_quant(source, job["quant"]) if job.get("parent") and not source.is_file else None
    return artifact, backend.export(source, wanted, progress=progress) if wanted else None


def main(argv: list[str]) -> int:
    from edgeprof.lifetime import die_with_parent

    die_with_parent()
    job = json.loads(Path(argv[0]).read_text())
    with open(argv[1], "a") as events:
        return run(job, events)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
