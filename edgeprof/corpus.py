"""The data edgeprof ships for fidelity: a default text and a small model trained here on real text.

Both come from Python's own standard library (PSF License Version 2, which permits redistribution; see
edgeprof/_data/README.md), made by scripts/train_stdlib_model.py:
- `default_fidelity_text()`: held-out modules (statistics, fractions, textwrap, heapq) the model never saw,
  the text perplexity and KL are measured over unless `--fidelity-text` names another.
- `trained_model_folder()`: an HF checkpoint (config.json, model.safetensors in float16, a byte-level BPE
  tokenizer.json of 4096 tokens): a 3.4M-parameter Llama trained on the rest of the standard library.
  As a model spec it is `trained:stdlib-llama` (or the folder's path).
Random synth weights make perplexity meaningless; these weights are real, so quantization error shows as
it does on real models (orderings, outliers), at a size every test can afford.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from edgeprof.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent / "_data"
TRAINED_PREFIX = "trained:"
_TRAINED = {"stdlib-llama": DATA_DIR / "stdlib-llama"}
_DEFAULT_TEXT = DATA_DIR / "fidelity" / "python-stdlib-heldout.txt"


def trained_model_folder(name: str = "stdlib-llama") -> Path:
    """The HF folder of a model trained here (`trained:<name>`)."""
    if name not in _TRAINED:
        raise ConfigError(f"unknown trained model {name!r} (available: {', '.join(_TRAINED)})")
    return _TRAINED[name]


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
