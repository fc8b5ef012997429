"""Calibrated GGUF quantizations: IQ types and `-imat` variants made with edgeprof's importance matrix.

Bounds are argued from storage: a b-bit quantizer of a block spans its range (about ±3σ for the
near-Gaussian weights of synth and trained checkpoints) with 2^b levels, so its RMS error is about
6σ / (2^b √12) = 1.73σ / 2^b; IQ types place their codebook points better than a uniform grid, so the
relative RMS error of every tensor stays below 2σ / 2^b = 2^(1-b) with b the type's bits per weight.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeprof.texts import default_fidelity_text
from edgeprof.errors import QuantError
from edgeprof.quant import GGUF_QUANTS, GGML_BLOCKS, bits_per_weight


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    text = default_fidelity_text().read_bytes()[:6000]  # a few 512-token chunks on the tiny vocabulary
    path = tmp_path_factory.mktemp("calibration") / "calibration.txt"
    path.write_bytes(text[:text.rfind(b"\n") + 1])
    return path


def _tensors(path) -> dict:
    import gguf
    from gguf.quants import dequantize

    return {t.name: (t.tensor_type.name.lower(), dequantize(t.data, t.tensor_type))
            for t in gguf.GGUFReader(path).tensors}


def test_iq_block_storage_is_ggml_common_h():
    # ggml-common.h's static_asserts: fp16 scale + QK_K/8 uint16 grid indices (iq2_xxs), and so on
    assert bits_per_weight("iq2_xxs") == 2.0625 and bits_per_weight("iq2_xs") == 2.3125
    assert bits_per_weight("iq3_xxs") == 3.0625 and bits_per_weight("iq1_s") == 1.5625
    assert GGML_BLOCKS["iq1_m"] == (256, 56) and GGML_BLOCKS["iq3_s"] == (256, 110)
    assert GGUF_QUANTS["iq2_xs"].imatrix_required and GGUF_QUANTS["q4_k_m-imat"].imatrix
    assert not GGUF_QUANTS["q4_k_m"].imatrix


def test_an_iq2_type_without_an_importance_matrix_is_refused(tmp_path, tiny_gguf_f32):
    from edgeprof.export.gguf_export import quantize_gguf

    with pytest.raises(QuantError) as info:
        quantize_gguf(tiny_gguf_f32.path, tmp_path / "out.gguf", GGUF_QUANTS["iq2_xxs"], 2, imatrix=None)
    assert "needs an importance matrix" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out.gguf").exists()


@pytest.mark.parametrize("quant", ["iq2_xs", "iq3_xxs"])
def test_iq_exports_load_and_stay_within_their_bit_width(quant, tiny_source, tiny_gguf_f32, calibration):
    from edgeprof.backends.llamacpp.session import LlamaCppSession
    from edgeprof.config import Hyperparameters
    from edgeprof.export.gguf_export import export_gguf

    artifact = export_gguf(tiny_source, quant, threads=2, calibration_text=calibration)
    assert artifact.quant == quant and artifact.imatrix.split()[2] == str(calibration)
    reference = _tensors(tiny_gguf_f32.path)
    seen = 0
    for name, (kind, weights) in _tensors(artifact.path).items():
        if kind != quant:
            continue
        original = reference[name][1]
        error = np.sqrt(np.mean((weights - original) ** 2) / np.mean(original ** 2))
        assert error < 2 ** (1 - bits_per_weight(quant)), (name, error)  # see the module docstring
        seen += 1
    assert seen >= 8  # the 2 layers' q, k, o, gate, up at least are of the type itself
    session = LlamaCppSession(artifact.path, Hyperparameters(prompt_tokens=16, gen_tokens=0, threads=2),
                              need_logits=True)
    try:
        logits = session.position_logits(np.arange(1, 17, dtype=np.int32), 0)
    finally:
        session.close()
    assert logits.shape[0] == 16 and np.isfinite(logits).all()


def test_the_importance_matrix_lowers_the_error_it_weights(tiny_source, tiny_gguf_f32, calibration):
    """llama.cpp's imatrix quantizer minimises Σ_j m_j (w_ij - q_ij)² with m_j the mean squared input of
    column j: on the q2_k tensors that weighted error must fall against plain q2_k (same storage)."""
    from edgeprof.backends.llamacpp.imatrix import imatrix_means
    from edgeprof.export.gguf_export import export_gguf
    from edgeprof.export.imatrix import ensure_imatrix

    plain = _tensors(export_gguf(tiny_source, "q2_k", threads=2).path)
    calibrated_artifact = export_gguf(tiny_source, "q2_k-imat", threads=2, calibration_text=calibration)
    calibrated = _tensors(calibrated_artifact.path)
    parent = export_gguf(tiny_source, "f32")
    means = imatrix_means(str(ensure_imatrix(parent.path, parent.sha256, calibration).path))
    reference = _tensors(tiny_gguf_f32.path)
    weighted = {"plain": 0.0, "imat": 0.0}
    for name, (kind, original) in reference.items():
        if plain[name][0] != "q2_k" or name not in means:
            continue
        for label, tensors in (("plain", plain), ("imat", calibrated)):
            weighted[label] += float((means[name] * (tensors[name][1] - original) ** 2).sum())
    assert weighted["plain"] > 0 and weighted["imat"] < weighted["plain"]
    assert calibrated_artifact.bytes == pytest.approx(export_gguf(tiny_source, "q2_k").bytes, abs=2048)


def test_another_calibration_text_makes_another_artifact(tmp_path, tiny_source, calibration):
    from edgeprof.export.gguf_export import export_gguf

    other = tmp_path / "other.txt"
    other.write_bytes(default_fidelity_text().read_bytes()[-6000:])
    first = export_gguf(tiny_source, "q4_k_m-imat", threads=2, calibration_text=calibration)
    second = export_gguf(tiny_source, "q4_k_m-imat", threads=2, calibration_text=other)
    assert first.path != second.path and first.imatrix.split()[1] != second.imatrix.split()[1]
    assert export_gguf(tiny_source, "q4_k_m-imat", threads=2, calibration_text=calibration) == first  # cached


def test_memory_fit_predicts_iq_weight_bytes(tiny_source, tiny_gguf_f32, calibration):
    """The roofline and memory fit size IQ files from GGML_BLOCKS and the per-tensor rules: the file minus its
    metadata (the f32 file minus the f32 weights, the same header and vocabulary) within 3 % of the prediction
    (file sizes are deterministic: this holds on any CPU)."""
    from edgeprof.export.gguf_export import export_gguf

    arch = tiny_source.architecture
    metadata = tiny_gguf_f32.bytes - arch.gguf_weight_bytes(GGUF_QUANTS["f32"])
    for quant in ("iq2_xs", "iq3_xxs"):
        stored = export_gguf(tiny_source, quant, threads=2, calibration_text=calibration).bytes - metadata
        predicted = arch.gguf_weight_bytes(GGUF_QUANTS[quant])
        assert abs(stored - predicted) < 0.03 * stored, (quant, stored, predicted)
