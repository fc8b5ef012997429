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


BACKENDS = ("llama.cpp", "onnxruntime")
_COMMON_OPTIONS = ("batch", "prompt_tokens", "gen_tokens", "context", "sampler", "threads", "depth", "power_mode")
BACKEND_OPTIONS = {  # the Hyperparameters fields each backend reads; the rest are not applicable to it
    "llama.cpp": _COMMON_OPTIONS + ("kv_type", "gpu_layers", "n_batch", "n_ubatch", "flash_attn"),
    "onnxruntime": _COMMON_OPTIONS + ("provider", "graph_opt"),
}
BACKEND_FORMATS = {"llama.cpp": "gguf", "onnxruntime": "onnx"}  # the artifact format each backend reads
_ALIASES = {"llamacpp": "llama.cpp", "llama-cpp": "llama.cpp", "ort": "onnxruntime", "onnx": "onnxruntime"}


def uses_gpu(backend: str, hp: Hyperparameters) -> bool:
    """Whether a configuration runs on a GPU: llama.cpp with layers offloaded, ONNX Runtime on a GPU provider."""
    return hp.gpu_layers != 0 if backend == "llama.cpp" else hp.provider != "cpu"


def canonical_backend(name: str) -> str:
    """`ort` -> `onnxruntime`, `llamacpp` -> `llama.cpp`; unknown names are a one-line error."""
    backend = _ALIASES.get(name.lower(), name.lower())
    if backend not in BACKENDS:
        from edgeprof.errors import ConfigError

        raise ConfigError(f"unknown backend {name!r} (available: {', '.join(BACKENDS)})")
    return backend


def open_session(backend: str, model_path: str, hp: Hyperparameters, need_logits: bool = False) -> BackendSession:
    """Create a session for `backend`; imports lazily so each backend stays optional. `need_logits`: the
    caller reads logits (fidelity, parity), so sampling must not move them off the host, and an ONNX graph
    gives them for every position (`position_logits`)."""
    backend = canonical_backend(backend)
    if backend == "llama.cpp":
        from edgeprof.backends.llamacpp.session import LlamaCppSession

        return LlamaCppSession(model_path, hp, need_logits=need_logits)
    from edgeprof.backends.onnxruntime.session import OnnxRuntimeSession

    return OnnxRuntimeSession(model_path, hp, all_positions=need_logits)
