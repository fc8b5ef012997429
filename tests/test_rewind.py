"""`rewind(position)`: the energy pass decodes the timed positions again without prefilling again. After a
rewind, the same token fed at the same positions over the same cache gives the same logits."""

import numpy as np
import pytest

import llama_cpp  # noqa: F401  - before the backends: see load_llama_cpp

from edgeprof.backends.base import open_session
from edgeprof.config import Hyperparameters

PROMPT, STEPS = 12, 5


def _last_logits(session) -> np.ndarray:
    if hasattr(session, "logits_of_last_decode"):
        return session.logits_of_last_decode(1)[0]
    return session._logits[0, 0].astype(np.float64)


def _rounds(session, rounds: int = 3) -> list[np.ndarray]:
    """sampler=none feeds the prompt's last token at every step, so each round's inputs are identical."""
    prompts = np.random.default_rng(5).integers(3, 1000, (1, PROMPT), dtype=np.int32)
    session.reset()
    session.prefill(prompts)
    out = []
    for _ in range(rounds):
        for _ in range(STEPS):
            session.decode_step()
        out.append(_last_logits(session).copy())
        session.rewind(PROMPT)
    return out


def _rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_llama_cpp_rewind_repeats_the_same_positions(tiny_gguf_f32):
    hp = Hyperparameters(batch=1, prompt_tokens=PROMPT, gen_tokens=STEPS, threads=2, kv_type="f32",
                         flash_attn="off", sampler="none")
    session = open_session("llama.cpp", tiny_gguf_f32.path, hp)
    try:
        first, *again = _rounds(session)
    finally:
        session.close()
    # Identical inputs, positions and cache contents on a fixed thread split: llama.cpp's CPU kernels
    # reduce in a fixed order, so any difference would be a stale cache entry, not rounding.
    for logits in again:
        assert _rel_err(logits, first) < 1e-6


def test_onnxruntime_rewind_repeats_the_same_positions(tiny_source):
    pytest.importorskip("optimum.exporters.onnx", reason="needs the export extra")
    from edgeprof.export.onnx_export import export_onnx

    hp = Hyperparameters(batch=1, prompt_tokens=PROMPT, gen_tokens=STEPS, threads=2, sampler="none")
    session = open_session("onnxruntime", export_onnx(tiny_source, "fp32").path, hp)
    try:
        assert session.info()["kv_cache"] == "shared-buffer"
        first, *again = _rounds(session)
    finally:
        session.close()
    for logits in again:  # same argument as above for ORT's CPU kernels
        assert _rel_err(logits, first) < 1e-6
