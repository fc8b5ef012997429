"""Cheap checks that a file is a whole GGUF before a native loader sees it.

llama.cpp aborts or crashes on some broken files; a Python check first turns the common cases
(wrong file, truncated download) into one clear line.
"""

from __future__ import annotations

from pathlib import Path

from edgeprof.errors import ArtifactError


def check_gguf(path: Path) -> dict:
    """Validate magic and size; return the GGUF's key/value metadata as plain Python values."""
    from edgeprof.models.gguf_header import GgufHeaderError, SkippedStrings, read_gguf_header

    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror})") from None
    if magic != b"GGUF":
        raise ArtifactError(f"{path}: not a GGUF file (bad magic {magic!r})")
    try:
        header = read_gguf_header(path)
    except (GgufHeaderError, OSError) as exc:
        raise ArtifactError(f"{path}: corrupt or truncated GGUF ({type(exc).__name__}: {exc})") from None
    size = path.stat().st_size
    try:
        needed = max((t.data_offset + t.n_bytes for t in header.tensors), default=0)
    except (KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: a tensor of a type this gguf package does not know ({exc})") from None
    if needed > size:
        raise ArtifactError(f"{path}: truncated GGUF (tensor data needs {needed} bytes, file has {size})")
    # vocabularies are large and not needed here
    return {key: value for key, value in header.fields.items()
            if not isinstance(value, SkippedStrings)
            and not (key.startswith("tokenizer.ggml.") and key != "tokenizer.ggml.model")}
