"""Cheap checks that a file is a whole GGUF before a native loader sees it.

llama.cpp aborts or crashes on some broken files; a Python check first turns the common cases
(wrong file, truncated download) into one clear line.
"""

from __future__ import annotations

from pathlib import Path

from edgeprof.errors import ArtifactError


def check_gguf(path: Path) -> dict:
    """Validate magic and size; return the GGUF's key/value metadata as plain Python values."""
    import gguf

    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from None
    if magic != b"GGUF":
        raise ArtifactError(f"{path}: not a GGUF file (bad magic {magic!r})")
    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as exc:  # the reader raises assorted errors on truncated headers
        raise ArtifactError(f"{path}: corrupt or truncated GGUF ({type(exc).__name__}: {exc})") from None
    size = path.stat().st_size
    needed = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=0)
    if needed > size:
        raise ArtifactError(f"{path}: truncated GGUF (tensor data needs {needed} bytes, file has {size})")
    metadata = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key not in ("tokenizer.ggml.model",):
            continue  # vocabularies are large and not needed here
        try:
            metadata[key] = field.contents()
        except Exception:  # noqa: BLE001 - exotic field types are skipped, not fatal
            continue
    return metadata
