"""Child processes: they never outlive edgeprof, and the parent reads their event lines as they come.

Workers run in their own session (so a Ctrl-C reaches edgeprof, which then ends them in order), which
also means nothing ends them when edgeprof itself is killed: three workers were found spinning at 100 %
of a core after `timeout` ended their runs. So every child asks Linux to kill it when its parent dies
(`PR_SET_PDEATHSIG`), and the parent turns SIGTERM and SIGHUP into the same orderly stop as Ctrl-C
(`stop_signals`). Where Linux is not there, a watchdog thread polls the parent instead.

PR_SET_PDEATHSIG fires when the *thread* that spawned the child ends; edgeprof spawns its children from
the thread that runs the configurations, which lives as long as the run.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

PARENT_PID_ENV = "EDGEPROF_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None) -> None:
    """Be killed (SIGKILL) when the parent dies; if it already died before we asked, exit now."""
    if parent_pid is None and os.environ.get(PARENT_PID_ENV):
        parent_pid = int(os.environ[PARENT_PID_ENV])
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    elif parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="edgeprof-parent-watch").start()
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died between our start and the request above


def pdeathsig_preexec():
    """A `preexec_fn` that makes an external program (tegrastats) die with us, or None off Linux. The libc
    call is looked up here, in the parent, so the child runs no import or dlopen between fork and exec.
    (Linux clears the request when the program is set-user-ID; such a child is ended by `close()` only.)"""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return set_pdeathsig


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child that should call `die_with_parent()`: ours plus our PID (and `extra`)."""
    return {**os.environ, **(extra or {}), PARENT_PID_ENV: str(os.getpid())}


def emit_event(stream, event: dict) -> None:
    """One event as one flushed JSON line: what a child has done survives its crash."""
    stream.write(json.dumps(event) + "\n")
    stream.flush()


class EventTail:
    """New whole lines of a child's events file since the last call (a torn last line waits)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def new_events(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        complete = data[:data.rfind(b"\n") + 1]
        self.offset += len(complete)
        events = []
        for line in complete.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events


class Stopped(BaseException):
    """SIGTERM or SIGHUP reached edgeprof: stop like Ctrl-C, then exit with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Inside the block, SIGTERM and SIGHUP raise `Stopped` in the main thread, so the code in flight
    unwinds (ending its worker, keeping what was recorded) exactly as it does for KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return

    def handler(signum, _frame):
        raise Stopped(signum)

    wanted = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
