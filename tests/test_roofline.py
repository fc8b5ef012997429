"""The roofline arithmetic against hand-computed values for the tiny preset (2 layers, so x2)."""

import pytest

from edgeprof.analysis.ceilings import device_ceilings
from edgeprof.analysis.roofline import Ceilings, compute_bound_batch, phase_ops, predict, time_ops
from edgeprof.hardware.devices import get_profile
from edgeprof.models.presets import get_preset
from edgeprof.quant import GGUF_QUANTS

ARCH = get_preset("tiny").architecture  # hidden 256, ffn 512, 2 layers, 4 heads, 2 KV heads, head 64, vocab 1024
F32 = GGUF_QUANTS["f32"]


def ops(batch, new, context, quant=F32):
    return {op.name: op for op in phase_ops(ARCH, quant, batch, new, context, kv_bytes=2.0)}


def test_decode_step_flops_and_bytes_by_hand():
    step = ops(batch=1, new=1, context=10)
    assert step["q_proj"].flops == 2 * 256 * 256 * 2  # 2*T*rows*cols per layer, 2 layers
    assert step["q_proj"].weight_bytes == 256 * 256 * 4 * 2
    assert step["k_proj"].flops == 2 * 128 * 256 * 2  # GQA: 2 KV heads x 64
    assert step["ffn_down"].weight_bytes == 256 * 512 * 4 * 2
    assert step["attn_scores"].flops == 2 * 10 * 4 * 64 * 2  # 10 positions x 4 heads x 64 dims
    kv_read = 2 * 10 * 128 * 2.0 * 2  # K and V, 10 positions, 128 wide, f16, 2 layers
    kv_write = 2 * 1 * 128 * 2.0 * 2
    assert step["attn_scores"].other_bytes == kv_read / 2 + kv_write
    assert step["attn_v"].other_bytes == kv_read / 2
    assert step["lm_head"].flops == 2 * 256 * 1024 and step["lm_head"].weight_bytes == 1024 * 256 * 4


def test_prefill_is_causal_and_lm_head_runs_once_per_sequence():
    prefill = ops(batch=3, new=16, context=16)
    assert prefill["attn_scores"].flops == 2 * (3 * 16 * 17 / 2) * 4 * 64 * 2
    assert prefill["q_proj"].flops == 2 * 48 * 256 * 256 * 2
    assert prefill["lm_head"].flops == 2 * 3 * 256 * 1024


def test_quantized_weights_follow_llama_cpp_tensor_types():
    q4 = ops(1, 1, 10, GGUF_QUANTS["q4_k_m"])
    # llama.cpp's use_more_bits(i, n=2) is true only for layer 1 (i >= 7n/8): its attn_v is q6_k
    # (210 bytes per 256 weights), layer 0's stays q4_k (144 bytes); q_proj is q4_k in both.
    assert q4["v_proj"].weight_bytes == 128 * 256 / 256 * 144 + 128 * 256 / 256 * 210
    assert q4["q_proj"].weight_bytes == 256 * 256 / 256 * 144 * 2


def test_time_is_the_larger_roof_plus_overhead_and_bound_says_which():
    ceilings = Ceilings(flops_per_s=1e12, bytes_per_s=1e11, kernel_overhead_s=1e-6, source="test")
    (timed,) = time_ops([ops(1, 1, 10)["q_proj"]], ceilings)
    assert timed.memory_s == pytest.approx(timed.op.bytes / 1e11)
    assert timed.seconds == pytest.approx(max(timed.compute_s, timed.memory_s) + 2e-6)
    assert timed.bound == "memory"


def test_more_bandwidth_moves_the_compute_bound_knee_to_a_smaller_batch():
    arch = get_preset("llama-3.2-1b").architecture
    q4 = GGUF_QUANTS["q4_k_m"]
    slow = compute_bound_batch(arch, q4, Ceilings(20e12, 68e9, 0, "t"), context=512)
    fast = compute_bound_batch(arch, q4, Ceilings(20e12, 680e9, 0, "t"), context=512)
    assert fast < slow


def test_prediction_uses_device_figures_and_batch_raises_throughput():
    arch = get_preset("llama-3.2-1b").architecture
    ceilings = device_ceilings(get_profile("jetson-orin-nano-8gb"), GGUF_QUANTS["q4_k_m"], on_gpu=True, mode="datasheet")
    assert ceilings.bytes_per_s == 68e9 and ceilings.flops_per_s == 20e12
    one, eight = (predict(arch, GGUF_QUANTS["q4_k_m"], ceilings, b, 512, 128) for b in (1, 8))
    assert eight.decode_tps > 4 * one.decode_tps
    assert one.bound("decode") == "memory"
    assert sum(one.shares("decode").values()) == pytest.approx(1.0)


def test_an_earlier_cpu_fit_still_loads_with_phase_specific_rates():
    fitted = {"weight_gbps": 13.0, "matmul_tflops": 0.09, "decode_attention_tflops": 0.007,
              "prefill_attention_tflops": 0.05}
    calibration = {"memory_bandwidth_gbps": 25.0, "cpu_tflops_fp32": 0.18, "llama_cpp_cpu": {"q4_k_m": fitted}}
    ceilings = device_ceilings(get_profile("generic-x86-64"), GGUF_QUANTS["q4_k_m"], False, calibration)
    assert ceilings.source == "calibrated with llama.cpp"
    assert ceilings.rates("ffn", "prefill") == (pytest.approx(0.09e12), float("inf"), True)  # fitted on FLOPs alone
    # no decode matmul rate in that fit: decode uses the prefill rate, streaming and computing additively
    assert ceilings.rates("ffn", "decode") == (pytest.approx(0.09e12), pytest.approx(13e9), True)
    assert ceilings.rates("attention", "decode")[0] == pytest.approx(7e9)
    assert ceilings.rates("attention", "prefill")[0] == pytest.approx(5e10)
    assert ceilings.rates("norms", "decode") == (0.18e12, 25e9, False)


def test_qk_norm_families_pay_for_their_per_head_norms():
    from edgeprof.analysis.roofline import phase_ops
    from edgeprof.export.gguf_export import gguf_quant
    from edgeprof.models.presets import get_preset

    arch = get_preset("qwen3-0.6b").architecture
    ops = {op.name: op for op in phase_ops(arch, gguf_quant("q4_k_m"), batch=1, new_tokens=1, context=512)}
    qk = ops["qk_norm"]
    assert qk.category == "norms" and qk.kernels == 2 * arch.num_layers
    assert qk.flops == 4.0 * (arch.q_dim + arch.kv_dim) * arch.num_layers  # one token: (q + kv) values per layer
    plain = {op.name for op in phase_ops(get_preset("qwen2.5-0.5b").architecture, gguf_quant("q4_k_m"), 1, 1, 512)}
    assert "qk_norm" not in plain


def test_smollm3s_layers_without_rope_do_not_rotate():
    from edgeprof.analysis.roofline import phase_ops
    from edgeprof.export.gguf_export import gguf_quant
    from edgeprof.models.presets import get_preset

    arch = get_preset("smollm3-3b").architecture
    assert sum(arch.rope_layers) == 27 and not arch.rope_layers[3]  # 36 layers, every 4th without RoPE
    rotary = next(op for op in phase_ops(arch, gguf_quant("q4_k_m"), 1, 1, 512) if op.name == "rotary")
    assert rotary.kernels == 2 * 27


def test_local_layers_read_only_the_swa_cache_llama_cpp_keeps():
    arch = get_preset("gemma-3-1b").architecture  # 22 local layers (window 512), 4 global, 1 KV head of 256
    cells = arch.swa_cache_cells(512)
    assert cells == 1024  # window 512 + micro-batch 512, padded to 256
    quant = GGUF_QUANTS["q4_k_m"]
    scores = {c: next(op for op in phase_ops(arch, quant, 1, 1, c) if op.name == "attn_scores") for c in (512, 8192)}
    per_cell = 2 * arch.kv_dim * 2.0 / 2  # K (half of K+V) of one cell, f16
    kv_write = 2 * arch.kv_dim * 2.0 * arch.num_layers
    assert scores[8192].other_bytes == pytest.approx(per_cell * (4 * 8192 + 22 * 1024) + kv_write)
    assert scores[512].other_bytes == pytest.approx(per_cell * 26 * 512 + kv_write)  # within the window: all alike
    # the KV cache the backend allocates, and the one a cache without windows would hold
    assert arch.kv_cache_bytes(8192, 2.0, cells) == 2 * arch.kv_dim * 2.0 * (4 * 8192 + 22 * 1024)
    assert arch.kv_cache_bytes(8192, 2.0, cells) < 0.3 * arch.kv_cache_bytes_per_token() * 8192


def test_moe_reads_the_experts_its_tokens_touch_and_computes_k_per_token():
    from edgeprof.analysis.roofline import expected_experts_touched

    assert expected_experts_touched(64, 8, 1) == pytest.approx(8)  # one token: its k experts
    for tokens in (2, 4, 16, 512):
        touched = expected_experts_touched(64, 8, tokens)
        assert 8 < touched <= min(64, 8 * tokens)  # up to min(E, B k), saturating at E
    arch = get_preset("olmoe-1b-7b").architecture
    quant = GGUF_QUANTS["q4_k_m"]

    def experts(batch):
        return [op for op in phase_ops(arch, quant, batch, 1, 512) if op.name.endswith("_exps")]

    one, sixteen = experts(1), experts(16)
    ratio = sum(op.weight_bytes for op in sixteen) / sum(op.weight_bytes for op in one)
    assert ratio == pytest.approx(expected_experts_touched(64, 8, 16) / 8)  # 56.4 of 64 experts vs 8
    assert sum(op.flops for op in sixteen) == pytest.approx(16 * sum(op.flops for op in one))  # FLOPs: active only
    # a dense FFN of the same width would read every expert: the MoE reads 8/64 of it at batch 1
    all_experts = 3 * arch.num_layers * arch.num_experts * arch.hidden_size * arch.expert_intermediate_size
    assert sum(op.weight_bytes for op in one) < 0.2 * all_experts  # ~4.5 bits per weight, 1/8 of the experts


def test_soft_caps_and_sandwich_norms_cost_what_they_add():
    from dataclasses import replace

    gemma2 = get_preset("gemma-2-2b").architecture
    uncapped = replace(gemma2, config={**gemma2.config, "attn_logit_softcapping": None,
                                       "final_logit_softcapping": None})
    quant = GGUF_QUANTS["q4_k_m"]
    capped_ops = {op.name: op for op in phase_ops(gemma2, quant, 1, 1, 1024)}
    plain_ops = {op.name: op for op in phase_ops(uncapped, quant, 1, 1, 1024)}
    assert capped_ops["softmax"].flops > plain_ops["softmax"].flops and "logit_softcap" in capped_ops
    assert "logit_softcap" not in plain_ops
    assert {"attn_post_norm", "ffn_post_norm"} <= set(capped_ops)  # Gemma's norms after attention and FFN
    phi = {op.name for op in phase_ops(get_preset("phi-4-mini").architecture, quant, 1, 1, 1024)}
    assert {"qkv_proj", "ffn_gate_up"} <= phi and "q_proj" not in phi  # one fused matmul each
