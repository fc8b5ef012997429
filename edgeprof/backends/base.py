"""The backend protocol: load once, then prefill a batch of prompts and step the decoder.

The runner owns timing; a session does only the work, so every backend is timed the same way.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edgeprof.config import Hyperparameters


class BackendSession(Protocol):
    """One loaded model with its context sized for `hyperparameters` (batch x context tokens)."""

    name: str
    n_vocab: int

    def prefill(self, prompts: np.ndarray) -> None:
        """Process `prompts` (int32, shape [batch, prompt_tokens]) and choose each sequence's first token."""

    def decode_step(self) -> None:
        """Feed every sequence's last token, one step, and choose the next; returns when the work is done."""

    def last_tokens(self) -> np.ndarray:
        """The most recently chosen token of each sequence (int32, [batch])."""

    def reset(self) -> None:
        """Forget all sequences (clear the KV cache) so the next prefill starts fresh."""

    def info(self) -> dict:
        """Facts about the loaded model and runtime for the record (sizes, devices, versions)."""

    def close(self) -> None:
        """Free native memory."""


def open_session(backend: str, model_path: str, hp: Hyperparameters) -> BackendSession:
    """Create a session for `backend` ("llama.cpp"); imports lazily so each backend stays optional."""
    if backend == "llama.cpp":
        from edgeprof.backends.llamacpp import LlamaCppSession

        return LlamaCppSession(model_path, hp)
    from edgeprof.errors import BackendUnavailableError

    raise BackendUnavailableError(f"unknown backend {backend!r} (available: llama.cpp)")
