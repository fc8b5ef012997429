"""The backend protocol: load once, then prefill a batch of prompts and step the decoder.

The runner owns timing; a session does only the work, so every backend is timed the same way. Each
backend implements it in its own package and registers there (`backends.registry`).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class BackendSession(Protocol):
    """One loaded model with its context sized for `hyperparameters` (batch x context tokens)."""

    name: str
    n_vocab: int

    def prefill(self, prompts: np.ndarray, start: int = 0) -> None:
        """Process `prompts` (int32, shape [batch, prompt_tokens]) and choose each sequence's first token.
        `start` > 0: each sequence already holds `start` tokens (a context depth), the prompt follows them."""

    def decode_step(self) -> None:
        """Feed every sequence's last token, one step, and choose the next; returns when the work is done."""

    def next_token_logits(self, prompts: np.ndarray) -> np.ndarray:
        """Float32 logits [batch, vocab] for the position after each prompt (not used while timing)."""

    def position_logits(self, tokens: np.ndarray, first: int = 0) -> np.ndarray:
        """Float32 logits [len(tokens) - first, vocab] for positions `first`.. of one sequence of `tokens`
        (int32 [T]) fed from an empty cache (fidelity over text; needs a session opened with need_logits)."""

    def text_tokens(self, text: str) -> tuple[np.ndarray, int | None]:
        """The text's token ids as the runtime's own tooling makes them, and the BOS id a chunk starts with
        (None where the vocabulary adds none)."""

    def last_tokens(self) -> np.ndarray:
        """The most recently chosen token of each sequence (int32, [batch])."""

    def reset(self) -> None:
        """Forget all sequences (clear the KV cache) so the next prefill starts fresh."""

    def rewind(self, position: int) -> None:
        """Forget every position >= `position` of every sequence, so decoding goes on from there (the
        energy pass repeats the timed decode positions without prefilling again)."""

    def info(self) -> dict:
        """Facts about the loaded model and runtime for the record (sizes, devices, versions)."""

    def close(self) -> None:
        """Free native memory."""


# Where a backend is looked up (its name, format, options, session): `edgeprof.backends.registry`. These
# names stay importable from here for the callers that used them before backends were plug-ins.
from edgeprof.backends.registry import canonical_backend, open_session, uses_gpu  # noqa: E402,F401


def __getattr__(name: str):
    """`BACKENDS`, `BACKEND_OPTIONS` and `BACKEND_FORMATS` as before, computed from the registry when read
    (so importing this module loads no backend)."""
    from edgeprof.backends import registry

    if name == "BACKENDS":
        return registry.names()
    if name == "BACKEND_OPTIONS":
        return {b.name: b.option_names for b in registry.backends().values()}
    if name == "BACKEND_FORMATS":
        return {b.name: b.format for b in registry.backends().values()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
