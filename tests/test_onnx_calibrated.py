"""ONNX Runtime's calibrated int4: GPTQ over the calibration text and HQQ, through MatMulNBits."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("optimum.exporters.onnx", reason="needs the export extra: pip install 'edgeprof[export]'")

from edgeprof.texts import default_fidelity_text  # noqa: E402
from edgeprof.errors import QuantError  # noqa: E402
from edgeprof.export.onnx_export import onnx_quant  # noqa: E402


def test_int4_algorithm_names_and_block_sizes():
    assert onnx_quant("int4-gptq").algorithm == "gptq" and onnx_quant("int4-gptq").block_size == 32
    assert onnx_quant("int4-hqq-b64").block_size == 64 and onnx_quant("int4-hqq-b64").name == "int4-hqq-b64"
    assert onnx_quant("int4-rtn").name == "int4" and onnx_quant("int4-rtn-b128").name == "int4-b128"
    with pytest.raises(QuantError, match="power of two"):
        onnx_quant("int4-gptq-b48")
    with pytest.raises(QuantError, match="int4-gptq"):
        onnx_quant("int4-awq")


@pytest.mark.parametrize("quant", ["int4-gptq", "int4-hqq"])
def test_calibrated_int4_exports_run_close_to_their_parent(quant, tmp_path, tiny_source):
    from edgeprof.backends.onnxruntime.session import OnnxRuntimeSession
    from edgeprof.config import Hyperparameters
    from edgeprof.export.onnx_export import export_onnx

    text = tmp_path / "calibration.txt"
    text.write_bytes(default_fidelity_text().read_bytes()[:8000])
    artifact = export_onnx(tiny_source, quant, calibration_text=text)
    parent = export_onnx(tiny_source, "fp32")
    assert artifact.imatrix.endswith(str(text)) == (quant == "int4-gptq")  # the sidecar names GPTQ's text
    tokens = np.arange(1, 33, dtype=np.int64)
    hp = Hyperparameters(prompt_tokens=32, gen_tokens=0, context=32, threads=2)
    logits = {}
    for name, path in (("q", artifact.path), ("parent", parent.path)):
        session = OnnxRuntimeSession(path, hp, all_positions=True)
        logits[name] = session.position_logits(tokens, 0)
        session.close()
    relative = np.linalg.norm(logits["q"] - logits["parent"]) / np.linalg.norm(logits["parent"])
    # 4-bit weights with a scale per 32: relative weight error about 1.73 / 2^4 ≈ 0.11 (see test_iq_export);
    # errors of independent weights add in quadrature through two layers, so logits stay well within 0.5
    assert np.isfinite(relative) and relative < 0.5, relative
