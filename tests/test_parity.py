"""GGUF logits from llama.cpp against an independent numpy forward pass of the same HF weights."""

import numpy as np
import pytest

from edgeprof.backends.llamacpp.session import LlamaCppSession
from edgeprof.config import Hyperparameters
from edgeprof.errors import ConfigError
from edgeprof.export.gguf_export import export_gguf
from edgeprof.models.source import resolve
from reference_forward import ReferenceModel

PROMPT_LEN = 40
STEPS = 32

# Numeric bounds, from the arithmetic rather than from one machine:
# - All f32 (f32 KV cache, flash attention off): llama.cpp and the float64 reference differ only by f32
#   rounding in dot products of length <= 768, in whatever order a CPU's SIMD width sums them:
#   O(sqrt(K) * 2**-24) ~ 1e-6 per layer at the very worst. Measured 2.4e-7 to 2.8e-7 (Intel Xeon, AMD EPYC).
F32_BOUND = 1e-5
# - Defaults (f16 KV cache, flash attention on): CPU flash attention rounds Q, K and V to f16 and sums the
#   softmax-weighted V in f16. With f16's unit roundoff u = 2**-11 = 4.9e-4, each layer's attention output
#   carries about (3 + sqrt(n)) u of relative error for n <= 40 positions summed in any order, ~9u; the
#   residual stream and the final norm stay f32, so the logits see a fraction of it. Measured 1.8u-2.1u
#   (8.7e-4 and 9.7e-4 here; 1.004e-3 on a Zen 4 host, which failed the old 1e-3 bound). 8u leaves 4x.
F16_UNIT_ROUNDOFF = 2.0 ** -11
DEFAULT_BOUND = 8 * F16_UNIT_ROUNDOFF
# - GeGLU families (Gemma) in all f32: ggml's CPU GELU reads a table of f16 values indexed by the f16-rounded
#   input (ggml-cpu/vec.h defines GGML_GELU_FP16 for every CPU architecture, x86-64 and aarch64 alike), so each
#   GELU value carries up to about 1.5u of relative error whatever the other types; that rounding, not the
#   CPU's summation order, sets the error. Measured on the logits: 0.57u (tiny-gemma2) and 0.93u (tiny-gemma3);
#   emulating the table in the reference removes 70-85 % of it. 4u leaves 4x, and stays 4x below the smallest
#   structural slip measured (tiny-gemma2 without its attention soft-cap: 7.6e-3).
GELU_TABLE_BOUND = 4 * F16_UNIT_ROUNDOFF
# - MoE presets: top-k routing is discontinuous, so these bounds hold only while rounding cannot flip an expert
#   choice. Synth routers get weights that spread router logits by about 1 (synth._random_tensor). On the test
#   prompt the smallest gap between the k-th and (k+1)-th router logit is 0.027 (tiny-qwen3moe) and 0.009
#   (tiny-olmoe), measured with the reference; the hidden state reaching a router is off by at most the
#   bounds above (1e-5, 8u = 3.9e-3 relative) in any summation order, i.e. router logits of size ~1.6 move
#   by < 7e-3 at the very worst: below both gaps on any CPU.


def _rel_err(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


FAMILY_PRESETS = ["synth:tiny", "synth:tiny-qwen2", "synth:tiny-qwen3", "synth:tiny-smollm3", "synth:tiny-gemma2",
                  "synth:tiny-gemma3", "synth:tiny-phi3", "synth:tiny-qwen3moe", "synth:tiny-olmoe"]


@pytest.fixture(scope="module", params=FAMILY_PRESETS)
def model(request):
    source = resolve(request.param)
    artifact = export_gguf(source, "f32")
    reference = ReferenceModel(source.hf_folder())
    prompt = np.random.default_rng(7).integers(3, source.architecture.vocab_size, PROMPT_LEN).tolist()
    return artifact, reference, prompt


def _session(artifact, **overrides):
    hp = Hyperparameters(batch=1, prompt_tokens=PROMPT_LEN, gen_tokens=STEPS, threads=2, **overrides)
    return LlamaCppSession(artifact.path, hp, need_logits=True)


def _f32_last_logits(artifact, prompt: list[int]) -> np.ndarray:
    """llama.cpp's logits after `prompt` with an f32 KV cache and no flash attention: f32 throughout."""
    session = _session(artifact, kv_type="f32", flash_attn="off")
    try:
        session.prefill(np.array([prompt], dtype=np.int32))
        return session.logits_of_last_decode(1)[0]
    finally:
        session.close()


def test_f32_logits_match_reference_exactly(model):
    artifact, reference, prompt = model
    bound = GELU_TABLE_BOUND if reference.gemma else F32_BOUND
    assert _rel_err(_f32_last_logits(artifact, prompt), reference.logits(prompt)[-1]) < bound


def test_default_settings_within_f16_rounding_and_greedy_tokens_the_reference_would_pick(model):
    artifact, reference, prompt = model
    session = _session(artifact)
    try:
        session.prefill(np.array([prompt], dtype=np.int32))
        assert _rel_err(session.logits_of_last_decode(1)[0], reference.logits(prompt)[-1]) < DEFAULT_BOUND
        tokens = [int(session.last_tokens()[0])]
        for _ in range(STEPS):
            session.decode_step()
            tokens.append(int(session.last_tokens()[0]))
    finally:
        session.close()
    # Teacher-forced along llama.cpp's own tokens: each must be the reference's argmax, or within what the
    # error bound allows. Logits off by at most DEFAULT_BOUND * |r| (in norm) move any two entries apart
    # by at most twice that, so only a top-2 gap below it may flip the choice on another CPU.
    forced = reference.logits(prompt + tokens[:-1])[PROMPT_LEN - 1:]
    for step, (chosen, ref) in enumerate(zip(tokens, forced)):
        slack = 2 * DEFAULT_BOUND * float(np.linalg.norm(ref))
        assert ref[chosen] >= ref.max() - slack, f"step {step}: token {chosen} is not the reference's choice"


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


@pytest.mark.parametrize("batch, prompt_len, n_batch", [
    (2, 12, 16),  # prefill in two llama_decode calls: sequence 0's prompt ends in the first, sequence 1's in the second
    (3, 4, 64),  # every prompt ends in one micro-batch: sequence 0's token is the argmax's first of three outputs
    (1, 12, 16),  # one sequence: no raw logits are copied at all
])
def test_greedy_on_the_device_picks_the_tokens_the_host_argmax_picks(tiny_gguf_f32, batch, prompt_len, n_batch):
    """The batched argmax (one ggml_argmax over every output row, inside llama.cpp's graph) returns token ids
    only; they must be the host argmax's over the same f32 logits, for every sequence of a decode step and
    across prefill chunks. ggml's CPU backend runs the same graph, so this holds the row-to-sequence mapping
    that the GPU relies on."""
    from edgeprof.backends.llamacpp.session import backend_sampling_available
    from edgeprof.backends.llamacpp.lib import load_llama_cpp

    if not backend_sampling_available(load_llama_cpp()):
        pytest.skip("this llama.cpp has no backend sampling")
    prompts = np.random.default_rng(11).integers(3, 1000, size=(batch, prompt_len)).astype(np.int32)
    hp = Hyperparameters(batch=batch, prompt_tokens=prompt_len, gen_tokens=32, threads=2, kv_type="f32",
                         flash_attn="off", n_batch=n_batch)

    def generate(need_logits: bool) -> tuple[np.ndarray, str]:
        session = LlamaCppSession(tiny_gguf_f32.path, hp, need_logits=need_logits, sampling="device")
        try:
            for _ in range(2):  # twice: the second pass reuses the graphs built by the first
                session.reset()
                session.prefill(prompts)
                out = [session.last_tokens()]
                for _ in range(32):
                    session.decode_step()
                    out.append(session.last_tokens())
            return np.stack(out, axis=1), session.info()["sampling"]
        finally:
            session.close()

    on_device, where = generate(need_logits=False)
    on_host, host_where = generate(need_logits=True)
    assert (where, host_where) == ("device", "host")
    # Both take the argmax of the same f32 logits; only an exact tie could differ (random weights: none).
    np.testing.assert_array_equal(on_device, on_host)


def test_a_device_sampling_session_refuses_to_hand_out_logits(tiny_gguf_f32):
    from edgeprof.backends.llamacpp.session import backend_sampling_available
    from edgeprof.backends.llamacpp.lib import load_llama_cpp

    if not backend_sampling_available(load_llama_cpp()):
        pytest.skip("this llama.cpp has no backend sampling")
    session = LlamaCppSession(tiny_gguf_f32.path, Hyperparameters(batch=1, prompt_tokens=8, gen_tokens=2, threads=2),
                              sampling="device")
    try:
        with pytest.raises(ConfigError, match="need_logits"):
            session.next_token_logits(np.zeros((1, 8), dtype=np.int32))
    finally:
        session.close()


def test_greedy_goes_to_the_device_wherever_the_model_is_on_a_gpu_and_a_step_fits_one_micro_batch():
    from edgeprof.backends.llamacpp.session import device_sampling_wins

    assert device_sampling_wins(Hyperparameters(batch=1, gpu_layers=-1))
    assert device_sampling_wins(Hyperparameters(batch=128, gpu_layers=-1))  # one argmax, not 128 chains
    assert device_sampling_wins(Hyperparameters(batch=512, gpu_layers=-1, n_ubatch=512))
    assert not device_sampling_wins(Hyperparameters(batch=513, gpu_layers=-1, n_ubatch=512))  # two micro-batches
    assert not device_sampling_wins(Hyperparameters(batch=1, gpu_layers=0))  # CPU: logits already on the host


def test_a_batch_too_wide_for_one_micro_batch_keeps_greedy_on_the_host(tiny_gguf_f32):
    from edgeprof.backends.llamacpp.session import backend_sampling_available
    from edgeprof.backends.llamacpp.lib import load_llama_cpp

    if not backend_sampling_available(load_llama_cpp()):
        pytest.skip("this llama.cpp has no backend sampling")
    hp = Hyperparameters(batch=4, prompt_tokens=4, gen_tokens=2, threads=2, n_batch=16, n_ubatch=2)
    session = LlamaCppSession(tiny_gguf_f32.path, hp, sampling="device")
    try:
        assert session.info()["sampling"] == "host"
    finally:
        session.close()


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


def test_smollm3s_layer_without_rope_is_what_llama_cpp_computes():
    # The f32 parity above holds with the 4th layer left unrotated; rotating it too moves the logits by
    # far more than the f32 bound (measured 6e-3 against 3e-7). That gap is the model's arithmetic, not
    # rounding: no CPU's f32 summation order comes within 100x F32_BOUND of it (see F32_BOUND's reasoning),
    # so the check tells a missed NoPE layer from rounding on any host.
    source = resolve("synth:tiny-smollm3")
    artifact = export_gguf(source, "f32")
    reference = ReferenceModel(source.hf_folder())
    assert reference.rotary == [1, 1, 1, 0]
    prompt = np.random.default_rng(7).integers(3, source.architecture.vocab_size, PROMPT_LEN).tolist()
    logits = _f32_last_logits(artifact, prompt)
    assert _rel_err(logits, reference.logits(prompt)[-1]) < F32_BOUND
    reference.rotary = [1, 1, 1, 1]
    assert _rel_err(logits, reference.logits(prompt)[-1]) > 100 * F32_BOUND
