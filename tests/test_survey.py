"""`edgeprof models compare`: presets and GGUF files of any family side by side."""

from __future__ import annotations

import json

from test_cli import edgeprof
from test_gguf_facts import _write_unmodelled_gguf


def test_models_compare_sets_presets_and_any_gguf_side_by_side(tmp_path):
    gguf_path = _write_unmodelled_gguf(tmp_path / "tiny-cohere2.gguf")
    result = edgeprof("models", "compare", "llama-3.2-1b", "synth:qwen2.5-0.5b", str(gguf_path), "--context", "2048",
                      "--device", "raspberry-pi-5", "-f", "json")
    assert result.returncode == 0, result.stderr
    rows = {row["model"]: row for row in json.loads(result.stdout)}
    llama, qwen, gemma = rows["synth:llama-3.2-1b"], rows["synth:qwen2.5-0.5b"], rows["gguf:tiny-cohere2.gguf"]
    assert (llama["heads"], llama["kv_heads"], llama["gqa_ratio"], llama["parameters"]) == (32, 8, 4.0, 1_235_814_400)
    assert llama["kv_bytes_per_token"] == 2 * 16 * 8 * 64 * 2 and llama["kv_bytes_at_context"] == 2048 * 32768
    assert qwen["family"] == "qwen2" and qwen["tied_embeddings"] is True and qwen["norms"] == "pre-norm RMSNorm"
    assert llama["weights_q4_k_m_bytes"] < llama["weights_q8_0_bytes"] < llama["weights_f16_bytes"]
    assert isinstance(llama["predicted_decode_tps"], float) and llama["predicted_decode_tps"] > 0
    # a family the roofline does not model: its stated facts, and an explicit unavailable prediction
    assert (gemma["family"], gemma["window"], gemma["kv_heads"], gemma["head_dim"]) == ("cohere2", 512, 1, 128)
    assert gemma["activation"] is None and gemma["predicted_decode_tps"] == "unavailable: cohere2"
    table = edgeprof("models", "compare", "llama-3.2-1b", str(gguf_path))
    assert table.returncode == 0 and "GQA 4" in table.stdout and "MQA" in table.stdout


def test_models_compare_refuses_bad_input_in_one_line():
    unknown = edgeprof("models", "compare", "no-such-preset")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    bad_format = edgeprof("models", "compare", "llama-3.2-1b", "-f", "xml")
    assert bad_format.returncode == 2 and "unknown format" in bad_format.stderr


def test_models_compare_shows_windows_experts_and_active_parameters():
    result = edgeprof("models", "compare", "gemma-3-1b", "olmoe-1b-7b", "phi-4-mini", "--context", "8192", "-f", "json")
    assert result.returncode == 0, result.stderr
    rows = {row["model"]: row for row in json.loads(result.stdout)}
    gemma, olmoe, phi = rows["synth:gemma-3-1b"], rows["synth:olmoe-1b-7b"], rows["synth:phi-4-mini"]
    assert (gemma["window"], gemma["window_pattern"], gemma["activation"]) == (512, "22 local : 4 global", "GeGLU")
    # 4 global layers keep all 8192 tokens, 22 local ones llama.cpp's 1024-cell SWA cache (512 + 512, padded)
    per_token_layer = 2 * 1 * 256 * 2
    assert gemma["kv_bytes_at_context"] == per_token_layer * (4 * 8192 + 22 * 1024)
    assert (olmoe["experts"], olmoe["active_parameters"]) == ("64/8", 1_282_017_280)
    assert "on 96/128 dims" in phi["positional"]
