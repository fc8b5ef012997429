"""Models trained here and shipped with edgeprof (`trained:<name>` as a model spec).

`stdlib-llama`: an HF checkpoint (config.json, model.safetensors in float16, a byte-level BPE tokenizer.json)
of a small Llama trained on Python's standard library by scripts/train_stdlib_model.py (PSF License
Version 2; see edgeprof/_data/README.md). Random synth weights make perplexity meaningless; these weights
are real, so quantization error shows as it does on real models (orderings, outliers), at a size every
test can afford. Its held-out text is `texts.default_fidelity_text()`.
"""

from __future__ import annotations

from pathlib import Path

from edgeprof.catalog import DATA_DIR
from edgeprof.errors import ConfigError

TRAINED_PREFIX = "trained:"
_TRAINED = {"stdlib-llama": DATA_DIR / "stdlib-llama"}


def trained_model_folder(name: str = "stdlib-llama") -> Path:
    """The HF folder of a model trained here (`trained:<name>`)."""
    if name not in _TRAINED:
        raise ConfigError(f"unknown trained model {name!r} (available: {', '.join(_TRAINED)})")
    return _TRAINED[name]
