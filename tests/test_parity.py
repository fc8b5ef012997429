"""GGUF logits from llama.cpp against an independent numpy forward pass of the same HF weights."""

import numpy as np
import pytest

from edgeprof.backends.llamacpp import LlamaCppSession
from edgeprof.config import Hyperparameters
from edgeprof.export.gguf_export import export_gguf
from edgeprof.source import resolve
from reference_forward import ReferenceModel

PROMPT_LEN = 40
STEPS = 32


def _rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module", params=["synth:tiny", "synth:tiny-qwen2"])
def model(request):
    source = resolve(request.param)
    artifact = export_gguf(source, "f32")
    reference = ReferenceModel(source.hf_folder())
    prompt = np.random.default_rng(7).integers(3, source.architecture.vocab_size, PROMPT_LEN).tolist()
    return artifact, reference, prompt


def _session(artifact, **overrides):
    hp = Hyperparameters(batch=1, prompt_tokens=PROMPT_LEN, gen_tokens=STEPS, threads=2, **overrides)
    return LlamaCppSession(artifact.path, hp)


def test_f32_logits_match_reference_exactly(model):
    # f32 KV cache and no flash attention: llama.cpp computes in f32 throughout.
    artifact, reference, prompt = model
    session = _session(artifact, kv_type="f32", flash_attn="off")
    try:
        session.prefill(np.array([prompt], dtype=np.int32))
        logits = session.logits_of_last_decode(1)[0]
    finally:
        session.close()
    assert _rel_err(logits, reference.logits(prompt)[-1]) < 1e-5


def test_default_settings_within_1e3_and_same_greedy_tokens(model):
    artifact, reference, prompt = model
    session = _session(artifact)
    try:
        session.prefill(np.array([prompt], dtype=np.int32))
        assert _rel_err(session.logits_of_last_decode(1)[0], reference.logits(prompt)[-1]) < 1e-3
        tokens = [int(session.last_tokens()[0])]
        for _ in range(STEPS):
            session.decode_step()
            tokens.append(int(session.last_tokens()[0]))
    finally:
        session.close()
    assert tokens == reference.greedy(prompt, STEPS)


def test_batched_sequences_match_single_runs(tiny_gguf_f32):
    """Batch > 1 is real: three different prompts in one batch give each prompt's own tokens."""
    prompts = np.random.default_rng(3).integers(3, 1000, size=(3, 12)).astype(np.int32)

    def generate(batch_prompts, **kw):
        hp = Hyperparameters(batch=len(batch_prompts), prompt_tokens=12, gen_tokens=6, threads=2,
                             kv_type="f32", flash_attn="off", **kw)
        session = LlamaCppSession(tiny_gguf_f32.path, hp)
        try:
            session.prefill(batch_prompts)
            out = [session.last_tokens()]
            for _ in range(6):
                session.decode_step()
                out.append(session.last_tokens())
        finally:
            session.close()
        return np.stack(out, axis=1)

    together = generate(prompts, n_batch=16)  # n_batch 16 < 36 prompt tokens: prefill spans chunks
    for i in range(3):
        assert together[i].tolist() == generate(prompts[i:i + 1])[0].tolist()


def test_sampler_none_waits_for_the_work_it_times(tiny_gguf_f32, monkeypatch):
    """Without a logits read nothing else synchronises: prefill and each step must (GPU decode is async)."""
    hp = Hyperparameters(batch=1, prompt_tokens=8, gen_tokens=2, threads=2, sampler="none")
    session = LlamaCppSession(tiny_gguf_f32.path, hp)
    calls = []
    real = session._llama_cpp.llama_synchronize
    monkeypatch.setattr(session._llama_cpp, "llama_synchronize", lambda ctx: calls.append(1) or real(ctx))
    try:
        session.prefill(np.zeros((1, 8), dtype=np.int32))
        assert len(calls) == 1
        session.decode_step()
        assert len(calls) == 2
    finally:
        session.close()
