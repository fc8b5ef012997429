"""Any GGUF: the model's shape from its metadata, `models show`, `predict` and the memory fit, for a family
the roofline models and for one it does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeprof.config import Hyperparameters
from edgeprof.models.gguf_facts import read_gguf_facts
from test_cli import edgeprof


def _write_unmodelled_gguf(path: Path) -> Path:
    """A tiny GGUF of a family the roofline does not model (cohere2: sliding window, K/V heads of 128)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "cohere2")
    writer.add_name("tiny-cohere2")
    writer.add_block_count(2)
    writer.add_embedding_length(64)
    writer.add_feed_forward_length(128)
    writer.add_head_count(4)
    writer.add_head_count_kv(1)
    writer.add_key_length(128)
    writer.add_value_length(128)
    writer.add_context_length(32768)
    writer.add_sliding_window(512)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tensor("token_embd.weight", np.zeros((300, 64), dtype=np.float32))
    for layer in range(2):
        writer.add_tensor(f"blk.{layer}.attn_q.weight", np.zeros((512, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_modelled_family_reads_back_as_its_preset():
    from edgeprof.export.gguf_export import export_gguf
    from edgeprof.models.source import resolve

    source = resolve("synth:tiny-qwen2")
    facts = read_gguf_facts(Path(export_gguf(source, "f32").path))
    assert (facts.family, facts.file_type, facts.layers, facts.kv_heads) == ("qwen2", "f32", 2, 1)
    assert facts.architecture().parameter_count == source.architecture.parameter_count
    assert facts.kv_cache_bytes_per_token() == source.architecture.kv_cache_bytes_per_token()


def test_an_unmodelled_family_is_shown_and_its_prediction_says_unavailable(tmp_path):
    path = _write_unmodelled_gguf(tmp_path / "tiny-cohere2.gguf")
    facts = read_gguf_facts(path)
    assert (facts.family, facts.sliding_window, facts.key_length, facts.vocab) == ("cohere2", 512, 128, 300)
    assert facts.parameters == 300 * 64 + 2 * 512 * 64 and facts.tied_embeddings
    shown = edgeprof("models", "show", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "cohere2" in shown.stdout and "512" in shown.stdout and "prediction unavailable: cohere2" in shown.stdout
    predicted = edgeprof("predict", "-m", str(path), "-d", "raspberry-pi-5")
    assert predicted.returncode == 2
    (line,) = predicted.stderr.strip().splitlines()
    assert line.startswith("error: prediction unavailable: cohere2 (the roofline models gemma2, gemma3, llama, ")


@pytest.mark.parametrize("preset", ["tiny-gemma2", "tiny-gemma3", "tiny-phi3", "tiny-qwen3moe", "tiny-olmoe"])
def test_each_2025_family_reads_back_from_its_gguf_to_the_same_prediction(preset):
    """The GGUF alone (window pattern, soft-caps, partial rotary, experts) gives the roofline what the preset
    gives it: the same parameters, KV cache and predicted times."""
    from edgeprof.analysis.ceilings import Ceilings
    from edgeprof.analysis.roofline import predict
    from edgeprof.export.gguf_export import export_gguf
    from edgeprof.quant import GGUF_QUANTS
    from edgeprof.models.source import resolve

    source = resolve(f"synth:{preset}")
    facts = read_gguf_facts(Path(export_gguf(source, "f32").path))
    arch, expected = facts.architecture(), source.architecture
    assert facts.parameters == expected.parameter_count
    assert (arch.swa_layers, arch.rotary_dim, arch.num_experts, arch.experts_per_token, arch.attn_softcap) == (
        expected.swa_layers, expected.rotary_dim, expected.num_experts, expected.experts_per_token,
        expected.attn_softcap)
    ceilings = Ceilings(1e12, 1e11, 1e-6, "test")
    ours, theirs = (predict(a, GGUF_QUANTS["f32"], ceilings, 4, 600, 64) for a in (arch, expected))
    assert (ours.ttft_s, ours.decode_step_s) == pytest.approx((theirs.ttft_s, theirs.decode_step_s), rel=1e-12)
    assert facts.kv_cache_bytes(4096) == expected.kv_cache_bytes(4096, window_cells=512 + 256 if expected.sliding_window
                                                                 else None)


def test_the_memory_fit_of_any_gguf_counts_its_kv_cache(tmp_path):
    from edgeprof.bench.plan import BenchConfig
    from edgeprof.hardware.emulation import memory_needed
    from edgeprof.models.source import resolve

    source = resolve(str(_write_unmodelled_gguf(tmp_path / "tiny-cohere2.gguf")))
    hp = Hyperparameters(batch=2, prompt_tokens=1000, gen_tokens=24, kv_type="f16")
    need = memory_needed(BenchConfig(source, "f32", "llama.cpp", hp), hp)
    # 2 layers x 1 KV head x (128 + 128) x 2 bytes per token, for 2 sequences of 1024 tokens
    assert need["kv_cache"] == pytest.approx(2 * 1 * 256 * 2 * 2 * 1024)
    assert need["weights"] == source.path.stat().st_size


def test_predict_takes_a_gguf_files_own_quantization(tiny_gguf_f32):
    result = edgeprof("predict", "-m", str(tiny_gguf_f32.path), "-d", "raspberry-pi-5", "-b", "1")
    assert result.returncode == 0, result.stderr
    assert " f32 on raspberry-pi-5" in result.stdout
