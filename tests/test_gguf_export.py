import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from edgeprof.errors import ArtifactError, QuantError
from edgeprof.export.artifacts import sha256_of
from edgeprof.export.gguf_check import check_gguf
from edgeprof.export.gguf_convert import permute_rotary
from edgeprof.export.gguf_export import export_gguf, gguf_quant
from edgeprof.quant import GGUF_QUANTS


def test_f32_gguf_has_llama_cpp_layout(tiny_gguf_f32, tiny_source):
    reader = gguf.GGUFReader(tiny_gguf_f32.path)
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight",
            "rope_freqs.weight"} <= names
    assert "output.weight" not in names  # tied embeddings
    meta = check_gguf(Path(tiny_gguf_f32.path))
    assert meta["general.architecture"] == "llama"
    assert meta["llama.block_count"] == 2 and meta["llama.attention.head_count_kv"] == 2
    assert meta["tokenizer.ggml.model"] == "gpt2"


def test_qwen2_keeps_biases_and_untied_output():
    from edgeprof.models.source import resolve

    artifact = export_gguf(resolve("synth:tiny-qwen2"), "f16")
    reader = gguf.GGUFReader(artifact.path)
    tensors = {t.name: t for t in reader.tensors}
    assert "blk.0.attn_q.bias" in tensors and "output.weight" in tensors
    assert tensors["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_rotary_permutation_interleaves_halves():
    # One head of 4 rows: HF keeps [x0, x1 | y0, y1]; llama.cpp wants pairs (x0, y0), (x1, y1).
    rows = np.arange(4, dtype=np.float32).reshape(4, 1)
    assert permute_rotary(rows, n_heads=1).ravel().tolist() == [0, 2, 1, 3]


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m", "q4_0", "q6_k"])
def test_quantized_artifact_and_sidecar(tiny_source, quant):
    artifact = export_gguf(tiny_source, quant)
    path = Path(artifact.path)
    sidecar = json.loads(Path(artifact.path + ".json").read_text())
    assert sidecar["quant"] == quant and sidecar["source"] == "synth:tiny"
    assert sidecar["bytes"] == path.stat().st_size and sidecar["sha256"] == sha256_of(path)
    meta = check_gguf(path)
    import llama_cpp

    assert meta["general.file_type"] == getattr(llama_cpp, GGUF_QUANTS[quant].ftype_constant)
    estimate = tiny_source.architecture.gguf_weight_bytes(GGUF_QUANTS[quant])
    assert estimate < artifact.bytes < estimate + 64_000  # the rest is vocabulary and metadata


def test_export_is_cached(tiny_source):
    first = export_gguf(tiny_source, "q8_0")
    mtime = Path(first.path).stat().st_mtime_ns
    second = export_gguf(tiny_source, "q8_0")
    assert second == first and Path(second.path).stat().st_mtime_ns == mtime


def test_unknown_quant_lists_the_offered_ones():
    with pytest.raises(QuantError, match="q4_k_m"):
        gguf_quant("q3_xx")


def test_not_gguf_and_truncated_gguf_are_clear_errors(tmp_path, tiny_gguf_f32):
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model")
    with pytest.raises(ArtifactError, match="not a GGUF"):
        check_gguf(text)
    data = Path(tiny_gguf_f32.path).read_bytes()
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated"):
        check_gguf(truncated)
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(data[:100])
    with pytest.raises(ArtifactError, match="corrupt or truncated|truncated"):
        check_gguf(header_only)
