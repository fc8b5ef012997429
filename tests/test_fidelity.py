"""Fidelity over text: the statistics against a hand computation, perplexity against the numpy reference's,
both runtimes on the same token stream, and one-line errors for texts that cannot be scored."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgeprof.config import Hyperparameters
from edgeprof.texts import default_fidelity_text, read_fidelity_text
from edgeprof.errors import ConfigError
from edgeprof.export.gguf_export import export_gguf
from edgeprof.fidelity import FidelitySettings, FidelityTextError, make_chunks, measure_fidelity
from edgeprof.fidelity.stats import compare, kl_figures, log_softmax, percentile, perplexity_figures, token_nll
from reference_forward import ReferenceModel

F32 = dict(threads=2, kv_type="f32", flash_attn="off")  # f32 throughout, as test_parity's exact bound assumes


def test_statistics_equal_a_hand_computation():
    rng = np.random.default_rng(0)
    parent_logits, logits = rng.normal(size=(40, 7)), rng.normal(size=(40, 7))
    logits[:20] = parent_logits[:20] + 0.01 * rng.normal(size=(20, 7))  # half nearly equal: same top token
    targets = rng.integers(0, 7, 40)
    lp, lq = log_softmax(parent_logits), log_softmax(logits)
    per = compare(lp, lq, targets)
    nll, parent_nll = token_nll(lq, targets), token_nll(lp, targets)
    figures = {**perplexity_figures(nll), **kl_figures(nll, parent_nll, per)}
    # the same figures, written out term by term in plain Python
    kls, dps, same = [], [], 0
    for row in range(40):
        p = [math.exp(v) / sum(math.exp(w) for w in parent_logits[row]) for v in parent_logits[row]]
        q = [math.exp(v) / sum(math.exp(w) for w in logits[row]) for v in logits[row]]
        kls.append(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)))
        dps.append(q[targets[row]] - p[targets[row]])
        same += max(range(7), key=p.__getitem__) == max(range(7), key=q.__getitem__)
    nlls = [-math.log(math.exp(logits[r][targets[r]]) / sum(math.exp(w) for w in logits[r])) for r in range(40)]
    mean_nll = sum(nlls) / 40
    se_nll = math.sqrt((sum(v * v for v in nlls) / 40 - mean_nll ** 2) / 39)
    kl_mean = sum(kls) / 40
    # float64 throughout on both sides: agreement to 1e-12 relative is rounding only
    assert figures["ppl"] == pytest.approx(math.exp(mean_nll), rel=1e-12)
    assert figures["ppl_se"] == pytest.approx(math.exp(mean_nll) * se_nll, rel=1e-9)
    assert figures["kl_mean"] == pytest.approx(kl_mean, rel=1e-12)
    assert figures["kl_se"] == pytest.approx(math.sqrt((sum(k * k for k in kls) / 40 - kl_mean ** 2) / 39), rel=1e-9)
    assert figures["kl_max"] == pytest.approx(max(kls), rel=1e-12)
    ordered = sorted(kls)
    assert figures["kl_median"] == pytest.approx((ordered[19] + ordered[20]) / 2, rel=1e-12)
    assert figures["kl_p99"] == pytest.approx(ordered[38] + 0.61 * (ordered[39] - ordered[38]), rel=1e-9)
    assert figures["top1_agreement"] == same / 40 and same >= 20
    assert figures["top1_se"] == pytest.approx(math.sqrt(same / 40 * (1 - same / 40) / 39))
    assert figures["dp_mean"] == pytest.approx(sum(dps) / 40, rel=1e-9)
    assert figures["dp_min"] == pytest.approx(min(dps)) and figures["dp_max"] == pytest.approx(max(dps))
    assert figures["ln_ppl_ratio"] == pytest.approx(mean_nll - sum(token_nll(lp, targets)) / 40, rel=1e-9)


def test_percentile_interpolates_like_llama_perplexity():
    values = np.array([0.0, 1.0, 2.0, 4.0])
    assert percentile(values, 0.5) == 1.5 and percentile(values, 0.99) == pytest.approx(2 + 0.97 * 2)
    assert percentile(values, 0.0) == 0.0 and percentile(values, 1.0) == 4.0


def test_chunks_place_bos_and_leave_out_the_tail():
    chunks = make_chunks(np.arange(100, 1100), ctx=256, chunks=0, bos=1)
    assert chunks.tokens.shape == (3, 256) and (chunks.tokens[:, 0] == 1).all()
    assert chunks.first == 128 and chunks.scored == 127
    assert chunks.targets(1).tolist() == list(range(100 + 256 + 129, 100 + 512))
    assert make_chunks(np.arange(1000), ctx=256, chunks=2, bos=None).tokens.shape == (2, 256)
    with pytest.raises(FidelityTextError, match="fewer than one chunk of 256"):
        make_chunks(np.arange(200), ctx=256, chunks=0, bos=None)


def test_texts_that_cannot_be_scored_are_one_clear_line(tmp_path):
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\xff\xfe\x00 not utf-8")
    with pytest.raises(ConfigError, match="not UTF-8"):
        FidelitySettings(text=str(binary)).validate()
    short = tmp_path / "short.txt"
    short.write_text("def f(): pass\n")
    with pytest.raises(ConfigError, match="fewer than one chunk"):
        FidelitySettings(text=str(short)).validate()
    with pytest.raises(ConfigError, match="cannot read"):
        FidelitySettings(text=str(tmp_path / "missing.txt")).validate()
    with pytest.raises(ConfigError, match="even number"):
        FidelitySettings(ctx=7).validate()
    assert read_fidelity_text(None).path == str(default_fidelity_text())


def test_a_text_that_tokenizes_shorter_than_a_chunk_is_one_line(tiny_gguf_f32, tmp_path):
    text = tmp_path / "few.txt"
    text.write_text("\x00" * 600)  # 600 bytes pass the byte check; the synth vocabulary merges byte 0 pairs
    with pytest.raises(FidelityTextError, match="fewer than one chunk of 512"):
        measure_fidelity("llama.cpp", tiny_gguf_f32.path, None, None, Hyperparameters(threads=2),
                         FidelitySettings(text=str(text), ctx=512))


def _reference_ppl(reference: ReferenceModel, chunks) -> float:
    nll = []
    for index in range(len(chunks.tokens)):
        logits = reference.logits(chunks.tokens[index].tolist())[chunks.first:-1]
        nll.append(token_nll(log_softmax(logits), chunks.targets(index)))
    return math.exp(np.concatenate(nll).mean())


def test_perplexity_equals_the_numpy_references_on_both_runtimes(tiny_source, tiny_gguf_f32):
    from edgeprof.backends.llamacpp.session import LlamaCppSession

    settings = FidelitySettings(ctx=64, chunks=3)
    session = LlamaCppSession(tiny_gguf_f32.path, Hyperparameters(batch=1, prompt_tokens=64, gen_tokens=0, **F32),
                              need_logits=True)
    try:
        tokens, bos = session.text_tokens(read_fidelity_text(None).text)
    finally:
        session.close()
    expected = _reference_ppl(ReferenceModel(tiny_source.hf_folder()), make_chunks(tokens, 64, 3, bos))
    got = measure_fidelity("llama.cpp", tiny_gguf_f32.path, None, None, Hyperparameters(**F32), settings)
    # f32 logits within 1e-5 relative of the float64 reference (test_parity.F32_BOUND); each NLL moves by at
    # most about twice that times the logits' scale (~1 here), so the mean NLL by < 2e-5 and ppl by < 2e-5
    # relative on any CPU. A slip in chunking (one position off) moves it by percents.
    assert got.figures["ppl"] == pytest.approx(expected, rel=1e-4)
    assert got.positions == 3 * 31 and got.chunks == 3
    onnx = pytest.importorskip("optimum.exporters.onnx") and __import__("edgeprof.export.onnx_export").export.onnx_export
    ort = measure_fidelity("onnxruntime", onnx.export_onnx(tiny_source, "fp32").path, None, None,
                           Hyperparameters(threads=2), settings)
    # the same token stream (the tokenizer.json beside the ONNX file tokenizes as llama.cpp's vocabulary),
    # and ORT's f32 arithmetic within the same bound
    assert ort.figures["ppl"] == pytest.approx(expected, rel=1e-4)


def test_a_model_against_itself_diverges_nowhere(tiny_gguf_f32):
    result = measure_fidelity("llama.cpp", tiny_gguf_f32.path, tiny_gguf_f32.path, "f32", Hyperparameters(**F32),
                              FidelitySettings(ctx=64, chunks=2))
    # the same file through the same kernels in the same order: bit-identical logits
    assert result.figures["kl_max"] == 0.0 and result.figures["top1_agreement"] == 1.0
    assert result.figures["ppl"] == result.figures["parent_ppl"] and result.figures["dp_max"] == 0.0


@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_the_all_positions_graph_ends_where_the_measured_one_does(tiny_source, quant):
    """Row-independent arithmetic (fp32; int4's MatMulNBits quantizes activations per row block) gives the
    measured graph's last-position logits. Not int8: ONNX Runtime's dynamic quantization takes one
    activation scale per tensor, so the LM head's scale spans every row it is given (docs/findings.md)."""
    pytest.importorskip("optimum.exporters.onnx")
    from edgeprof.backends.onnxruntime.session import OnnxRuntimeSession
    from edgeprof.export.onnx_export import export_onnx

    path = export_onnx(tiny_source, quant).path
    tokens = np.random.default_rng(2).integers(3, 1000, 48).astype(np.int32)
    hp = Hyperparameters(batch=1, prompt_tokens=48, gen_tokens=0, threads=2)
    measured, every = OnnxRuntimeSession(path, hp), OnnxRuntimeSession(path, hp, all_positions=True)
    try:
        last = measured.next_token_logits(tokens[None])[0]
        rows = every.position_logits(tokens, first=8)
        with pytest.raises(ConfigError, match="last position only"):
            measured.position_logits(tokens)
    finally:
        measured.close()
        every.close()
    assert rows.shape == (40, 1024)
    # the same weights and nodes; only the LM head's MatMul sees 48 rows instead of 1, which a CPU kernel may
    # sum in another order: f32 rounding, O(sqrt(256) 2**-24) relative
    np.testing.assert_allclose(rows[-1], last, rtol=0, atol=1e-5 * float(np.abs(last).max()))


def test_cli_fidelity_prints_the_table_and_refuses_a_bad_text_in_one_line(tmp_path):
    from test_cli import edgeprof

    result = edgeprof("fidelity", "synth:tiny", "-q", "f32,q8_0", "--chunks", "2", "--ctx", "64")
    assert result.returncode == 0, result.stderr
    assert "fidelity over text" in result.stdout and "q8_0" in result.stdout
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\xff" * 4096)
    for command in (("fidelity", "synth:tiny", "--fidelity-text", str(binary)),
                    ("run", "-m", "synth:tiny", "-q", "q8_0", "--fidelity-text", str(binary), "-o", str(tmp_path))):
        result = edgeprof(*command)
        assert result.returncode == 2 and "not UTF-8" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    few = tmp_path / "few.txt"
    few.write_text("\x00" * 600)  # passes the byte check; tokenizes to 300 tokens (see above)
    result = edgeprof("fidelity", "synth:tiny", "-q", "f32", "--fidelity-text", str(few))
    assert result.returncode == 2 and "fewer than one chunk of 512" in result.stderr, result.stderr


_NATIVE_KLD = """====== Perplexity statistics ======
Mean PPL(Q)                   : 209.737114 ±   6.112345
Mean PPL(base)                : 209.640000 ±   6.100000
Cor(ln(PPL(Q)), ln(PPL(base))):  99.95%
Mean ln(PPL(Q)/PPL(base))     :   0.000290 ±   0.000120
Mean PPL(Q)/PPL(base)         :   1.000290 ±   0.000120
Mean PPL(Q)-PPL(base)         :   0.060000 ±   0.025000

====== KL divergence statistics ======
Mean    KLD:   0.000042 ±   0.000001
Maximum KLD:   0.004189
99.9%   KLD:   0.001000
99.0%   KLD:   0.000273
95.0%   KLD:   0.000100
90.0%   KLD:   0.000080
Median  KLD:   0.000026
10.0%   KLD:   0.000002
Minimum KLD:  -0.000001

====== Token probability statistics ======
Mean    Δp: -0.002 ± 0.001 %
Maximum Δp:  2.100%
Median  Δp:  0.000%
RMS Δp    :  0.056 ± 0.004 %
Same top p: 99.270 ± 0.119 %
"""


def test_the_parity_script_reads_llama_perplexitys_statistics():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "scripts" / "fidelity_vs_llama_perplexity.py"
    spec = importlib.util.spec_from_file_location("fidelity_parity", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    figures = script.parse_kld(_NATIVE_KLD)
    assert figures["ppl"] == 209.737114 and figures["ppl_se"] == 6.112345 and figures["parent_ppl"] == 209.64
    assert figures["kl_mean"] == 0.000042 and figures["kl_se"] == 0.000001 and figures["kl_max"] == 0.004189
    assert figures["kl_p99"] == 0.000273 and figures["kl_median"] == 0.000026
    assert figures["top1_agreement"] == pytest.approx(0.9927) and figures["top1_se"] == pytest.approx(0.00119)
    assert figures["dp_rms"] == pytest.approx(0.00056) and figures["dp_mean"] == pytest.approx(-0.00002)
    assert script.parse_base("Final estimate: PPL = 209.6400 +/- 6.10000\n") == {"ppl": 209.64, "ppl_se": 6.1}
