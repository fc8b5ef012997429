"""The texts edgeprof reads: the one it ships and a user's own.

`default_fidelity_text()` is held-out Python standard-library source (statistics, fractions, textwrap,
heapq; PSF License Version 2, which permits redistribution; see edgeprof/_data/README.md) that the model
trained here (`models/trained.py`) never saw: fidelity measures perplexity and KL over it unless
`--fidelity-text` names another, and calibrated quantizations (an importance matrix, ONNX int4) take it as
their default calibration text. It lives below both the exporters and fidelity, which both read it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from edgeprof.catalog import DATA_DIR
from edgeprof.errors import ConfigError

_DEFAULT_TEXT = DATA_DIR / "fidelity" / "python-stdlib-heldout.txt"


def default_fidelity_text() -> Path:
    """The text fidelity is measured over by default (held out from the trained model's training)."""
    return _DEFAULT_TEXT


@dataclass(frozen=True)
class FidelityText:
    """A text to score, decoded, with the hash that keys cached results."""

    path: str
    text: str
    sha256: str


def read_fidelity_text(path: str | Path | None = None, min_bytes: int = 1) -> FidelityText:
    """The text at `path` (the default text for None), UTF-8 decoded; an unreadable, undecodable or too
    short file is one `ConfigError` line. `min_bytes`: a chunk of C tokens needs at least C bytes (every
    token stands for at least one byte), so a shorter file cannot fill one whatever the tokenizer."""
    path = Path(path) if path is not None else _DEFAULT_TEXT
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the fidelity text ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the fidelity text is not UTF-8 (byte {exc.start}); give a UTF-8 text file") from None
    if len(raw) < min_bytes:
        raise ConfigError(f"{path}: the fidelity text has {len(raw)} bytes, fewer than one chunk of {min_bytes} "
                          "tokens needs; give a longer text or a smaller --fidelity-ctx")
    return FidelityText(str(path), text, hashlib.sha256(raw).hexdigest())
