"""Exports and checks of users' files, each in a child process (`export_worker`): the parent's side.

A user error in the child comes back as the same one-line `EdgeprofError`; an exporter's own failure or a
native crash as `ExportFailed`, which fails one configuration and lets the sweep go on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from edgeprof.errors import ArtifactError, EdgeprofError
from edgeprof.export.artifacts import Artifact
from edgeprof.lifetime import EventTail, child_env

Progress = Callable[[str, int, int], None]


class ExportFailed(Exception):
    """The exporter raised or the export process died: this configuration fails, nothing else."""


def export_artifact(spec: str, fmt: str, quant: str, seed: int = 0, with_parent: bool = False,
                    progress: Progress | None = None,
                    calibration_text: str | None = None) -> tuple[Artifact, Artifact | None]:
    """What `export_gguf`/`export_onnx` would return, made in a child process (cached as usual); with
    `with_parent`, also the unquantized artifact fidelity compares it with (None for the parent itself)."""
    final = _run({"action": "export", "spec": spec, "seed": seed, "format": fmt, "quant": quant,
                  "parent": with_parent, "calibration_text": calibration_text}, progress)
    parent = final.get("parent")
    return Artifact(**final["artifact"]), Artifact(**parent) if parent else None


def check_model_file(path: Path, kind: str) -> dict:
    """`check_gguf`/`check_onnx` of a user's file in a child process: its metadata (GGUF), or the error.
    A reader that crashes on the file is the file's fault too: one line, not a traceback."""
    try:
        return _run({"action": "check", "path": str(path), "kind": kind}, None)["metadata"]
    except ExportFailed as exc:
        raise ArtifactError(f"{path}: reading it crashed the {kind.upper()} reader ({exc})") from None


def _run(job: dict, progress: Progress | None, poll_s: float = 0.2) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgeprof-export-") as folder:
        job_path, events_path, stderr_path = (Path(folder) / name for name in ("job.json", "events.jsonl", "stderr"))
        job_path.write_text(json.dumps(job))
        tail = EventTail(events_path)
        events: list[dict] = []
        with open(stderr_path, "w") as stderr:
            child = subprocess.Popen([sys.executable, "-m", "edgeprof.backends.export_worker", str(job_path),
                                      str(events_path)], stdout=subprocess.DEVNULL, stderr=stderr, env=child_env())
            try:
                while True:
                    try:
                        child.wait(timeout=poll_s)
                        break
                    except subprocess.TimeoutExpired:
                        events += _relay(tail.new_events(), progress)
            except BaseException:  # Ctrl-C, SIGTERM: the export ends with us
                child.kill()
                child.wait()
                raise
        events += _relay(tail.new_events(), progress)
        final = next((e for e in reversed(events) if e["event"] in ("artifact", "checked", "error")), None)
        if final is not None and final["event"] != "error":
            return final
        if final is not None and final.get("user"):
            raise EdgeprofError(final["message"])
        if final is not None:
            raise ExportFailed(final["message"])
        lines = [line.strip() for line in stderr_path.read_text(errors="replace").splitlines() if line.strip()]
        how = (f"died with {signal.Signals(-child.returncode).name}" if child.returncode < 0
               else f"exited with code {child.returncode}")
        raise ExportFailed(f"export failed: the export process {how}; stderr: {' | '.join(lines[-4:])}")


def _relay(events: list[dict], progress: Progress | None) -> list[dict]:
    for event in events:
        if event["event"] == "progress" and progress is not None:
            progress(event["step"], event["done"], event["total"])
    return events
