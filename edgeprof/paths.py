"""Where edgeprof keeps what it makes: the cache of synth models and exported artifacts, and run folders."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

from edgeprof.errors import OutputError


def cache_root() -> Path:
    """`EDGEPROF_CACHE`, else the user's cache folder (e.g. ~/.cache/edgeprof)."""
    env = os.environ.get("EDGEPROF_CACHE")
    return Path(env).expanduser() if env else Path(user_cache_dir("edgeprof"))


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Create `path` if needed and prove it is writable, or raise a one-line `OutputError`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".edgeprof-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write the {what} {path}: {exc.strerror or exc}") from None
    return path
