"""Each measured configuration's share of its device's roofs (decode: bandwidth; prefill: compute)."""

import pytest

from edgeprof.analysis.roof_share import roof_shares
from edgeprof.hardware.devices import get_profile
from edgeprof.models.presets import get_preset
from edgeprof.quant import GGUF_QUANTS

ROW = {"model": "synth:llama-3.2-1b", "model_spec": "synth:llama-3.2-1b", "quant": "q4_k_m", "backend": "llama.cpp",
       "batch": 1, "prompt_tokens": 512, "gen_tokens": 128, "kv_type": "f16", "n_ubatch": 512, "gpu_layers": -1,
       "decode_tps_mean": 882.0, "prefill_tps_mean": 38_000.0}


def test_shares_are_measured_over_the_plain_roofs():
    shares = roof_shares(ROW, get_profile("h200"), None)
    weights = get_preset("llama-3.2-1b").architecture.gguf_weight_bytes(GGUF_QUANTS["q4_k_m"])
    # a step reads at least the weights (the embedding table aside), so the roof sits below 4.8 TB/s / weights;
    # the KV cache and activations of a 1B model at 576 positions add well under a tenth
    assert 0.9 * 4.8e12 / weights < shares["decode_bandwidth_roof_tps"] < 1.15 * 4.8e12 / weights
    assert shares["decode_roof_share"] == pytest.approx(882.0 / shares["decode_bandwidth_roof_tps"])
    assert 0 < shares["prefill_roof_share"] < 0.2  # a 1B prefill on an H200 is far from its int8 peak
    assert shares["roof_basis"].startswith("datasheet GPU: 4800 GB/s")


def test_batch_raises_the_bandwidth_roof_and_a_cpu_run_uses_the_cpu_roofs():
    one = roof_shares(ROW, get_profile("h200"), None)
    eight = roof_shares({**ROW, "batch": 8}, get_profile("h200"), None)
    assert 4 < eight["decode_bandwidth_roof_tps"] / one["decode_bandwidth_roof_tps"] <= 8  # weights read once
    cpu = roof_shares({**ROW, "gpu_layers": 0}, get_profile("raspberry-pi-5"), None)
    assert cpu["roof_basis"].startswith("datasheet CPU: 17.1 GB/s")


def test_no_share_where_it_cannot_be_stated():
    assert roof_shares({**ROW, "backend": "onnxruntime"}, get_profile("h200"), None) == {}
    assert roof_shares(ROW, get_profile("generic-x86-64"), None) == {}  # no figures, no calibration
    missing = roof_shares({**ROW, "decode_tps_mean": float("nan")}, get_profile("h200"), None)
    assert missing["decode_roof_share"] is None and missing["prefill_roof_share"] > 0
