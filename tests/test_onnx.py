"""The ONNX path: optimum export with fused attention, ORT quantization, the ORT backend, parity with GGUF,
fidelity, the operator profile, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("optimum.exporters.onnx", reason="needs the export extra: pip install 'edgeprof[export]'")

import llama_cpp  # noqa: E402,F401  - before the backends: see load_llama_cpp

from edgeprof.backends.base import open_session  # noqa: E402
from edgeprof.config import Hyperparameters  # noqa: E402
from edgeprof.errors import ArtifactError, BackendUnavailableError, QuantError  # noqa: E402
from edgeprof.export.gguf_export import export_gguf  # noqa: E402
from edgeprof.export.onnx_export import check_onnx, export_onnx, onnx_quant  # noqa: E402
from edgeprof.models.source import resolve  # noqa: E402
from test_cli import edgeprof  # noqa: E402


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def onnx_fp32(tiny_source):
    return export_onnx(tiny_source, "fp32")


def _greedy(session, prompts: np.ndarray, steps: int) -> np.ndarray:
    session.reset()
    session.prefill(prompts)
    tokens = [session.last_tokens()]
    for _ in range(steps):
        session.decode_step()
        tokens.append(session.last_tokens())
    return np.stack(tokens, axis=1)


def test_ort_fp32_matches_gguf_f32_logits_and_greedy_tokens(tiny_source, onnx_fp32):
    hp = Hyperparameters(batch=2, prompt_tokens=16, gen_tokens=32, threads=2, kv_type="f32", flash_attn="off")
    prompts = np.random.default_rng(7).integers(0, 1024, (2, 16), dtype=np.int32)
    gguf = open_session("llama.cpp", export_gguf(tiny_source, "f32").path, hp, need_logits=True)
    ort = open_session("onnxruntime", onnx_fp32.path, hp)
    try:
        assert ort.info()["kv_cache"] == "shared-buffer"  # the fused-attention export, cache updated in place
        # Both f32 end to end; only the order of f32 accumulation differs (MLAS vs ggml kernels, each CPU's
        # SIMD width): O(sqrt(K) * 2**-24) ~ 1e-6 (measured 7e-7). 1e-3 leaves room for any CPU's kernels.
        # Greedy tokens can then differ only where a top-2 gap is below ~1e-6 of the logits' norm.
        assert _rel_err(ort.next_token_logits(prompts), gguf.next_token_logits(prompts)) < 1e-3
        ort_tokens, gguf_tokens = _greedy(ort, prompts, 32), _greedy(gguf, prompts, 32)
        assert ort_tokens.shape == (2, 33)
        np.testing.assert_array_equal(ort_tokens, gguf_tokens)
        # each sequence of the batch decodes exactly as it would alone
        solo = open_session("onnxruntime", onnx_fp32.path, Hyperparameters(batch=1, prompt_tokens=16, gen_tokens=32,
                                                                            threads=2))
        np.testing.assert_array_equal(_greedy(solo, prompts[1:], 32)[0], ort_tokens[1])
        solo.close()
    finally:
        gguf.close()
        ort.close()


def test_variants_are_smaller_and_fidelity_orders_them(tiny_source, onnx_fp32):
    from edgeprof.fidelity import FidelitySettings, measure_fidelity

    hp = Hyperparameters(threads=2)
    settings = FidelitySettings(ctx=128, chunks=3)
    sizes, kl = {}, {}
    for quant in ("fp16", "int8", "int4", "int4-b64"):
        artifact = export_onnx(tiny_source, quant)
        sizes[quant] = artifact.bytes
        figures = measure_fidelity("onnxruntime", artifact.path, onnx_fp32.path, "fp32", hp, settings).figures
        assert 0.0 <= figures["top1_agreement"] <= 1.0 and figures["kl_max"] >= figures["kl_mean"] >= 0.0
        kl[quant] = figures["kl_mean"]
    assert sizes["int4"] < sizes["int8"] < sizes["fp16"] < onnx_fp32.bytes
    assert kl["fp16"] < kl["int8"] < kl["int4"]  # fewer bits, larger divergence from the parent
    gguf = measure_fidelity("llama.cpp", export_gguf(tiny_source, "q4_0").path, export_gguf(tiny_source, "f32").path,
                            "f32", hp, settings)
    assert gguf.figures["kl_mean"] > 0 and gguf.parent_quant == "f32"


def test_quant_names():
    assert onnx_quant("f16").name == "fp16" and onnx_quant("int4").block_size == 32
    assert onnx_quant("int4-b128").block_size == 128
    with pytest.raises(QuantError, match="power of two"):
        onnx_quant("int4-b48")
    with pytest.raises(QuantError, match="offered: fp32"):
        onnx_quant("q4_k_m")


def test_profile_ops_breakdown_covers_the_model(onnx_fp32):
    from edgeprof.backends.onnxruntime.profile import OP_CATEGORIES, categorize, profile_ops

    assert categorize("/model/layers.3/self_attn/q_proj/MatMul_Q4") == "projections"
    assert categorize("/model/layers.0/mlp/act_fn/Mul/QuickGeluFusion/") == "ffn"
    assert categorize("/model/layers.0/post_attention_layernorm/Mul_1/SimplifiedLayerNormFusion/") == "norms"
    assert categorize("/model/layers.1/self_attn/GroupQueryAttention") == "attention"
    assert categorize("/lm_head/MatMul") == "lm_head" and categorize("/edgeprof/mask_sum") == "other"
    hp = Hyperparameters(batch=1, prompt_tokens=32, gen_tokens=4, threads=2)
    profile = profile_ops(onnx_fp32.path, hp, np.zeros((1, 32), dtype=np.int32))
    assert profile.backend == "onnxruntime" and profile.decode_steps_profiled == 4
    for phase in (profile.prefill, profile.decode):
        shares = phase.share
        assert set(shares) == set(OP_CATEGORIES) and sum(shares.values()) == pytest.approx(1.0)
        for category in ("projections", "ffn", "attention", "lm_head"):
            assert shares[category] > 0, (phase, category)
        assert phase.run_ms >= phase.node_ms * 0.9


def test_summarize_trace_splits_phases_by_model_run():
    from edgeprof.backends.onnxruntime.profile import summarize_trace

    def run(ts, dur):
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": dur}

    def node(ts, dur, name):
        return {"cat": "Node", "name": name + "_kernel_time", "ts": ts, "dur": dur, "args": {}}

    events = [run(0, 100), run(200, 10), run(300, 100), run(500, 10),  # round 1 (ignored), round 2
              node(1, 90, "/model/layers.0/mlp/up_proj/MatMul"),
              node(301, 60, "/model/layers.0/mlp/up_proj/MatMul"), node(362, 30, "/lm_head/MatMul"),
              node(501, 8, "/model/layers.0/self_attn/GroupQueryAttention")]
    summary = summarize_trace(events, steps=1)
    assert summary.prefill.ms["ffn"] == pytest.approx(0.060) and summary.prefill.ms["lm_head"] == 0.030
    assert summary.decode.share["attention"] == 1.0


def test_bad_onnx_inputs_are_one_line_errors(tmp_path, onnx_fp32):
    from onnx import TensorProto, helper, save_model

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all" * 10)
    with pytest.raises(ArtifactError, match="not an ONNX model"):
        check_onnx(garbage)
    # a copy of the graph without its external-data file
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "model.onnx").write_bytes(open(onnx_fp32.path, "rb").read())
    with pytest.raises(ArtifactError, match="external data file model.onnx.data is missing"):
        check_onnx(lonely / "model.onnx")
    # a causal LM without a KV cache
    graph = helper.make_graph([helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)], "g",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s"])])
    no_cache = tmp_path / "nocache.onnx"
    save_model(helper.make_model(graph), str(no_cache))
    result = edgeprof("run", "-m", str(no_cache), "--backend", "onnxruntime", "-o", str(tmp_path))
    assert result.returncode == 2 and "no KV-cache inputs/outputs" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    missing = edgeprof("run", "-m", "synth:tiny", "--backend", "onnxruntime", "-q", "fp32", "--provider", "cuda",
                       "-o", str(tmp_path))
    assert missing.returncode == 2 and "provider 'cuda' is not available" in missing.stderr


@pytest.mark.parametrize("location", ["../outside.bin", "/dev/zero", "/etc/hostname"])
def test_external_data_that_leaves_the_models_folder_is_refused(tmp_path, location):
    """An ONNX file's external-data `location` was followed and hashed wherever it pointed: `/dev/zero`
    hung the run, `../` read files beside the user's folder. Only files inside the model's folder count."""
    from onnx import TensorProto, helper, save_model

    (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
    weight = helper.make_tensor("w", TensorProto.FLOAT, [4], [0.0] * 4)
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    weight.external_data.add(key="location", value=location)
    graph = helper.make_graph([helper.make_node("Cast", ["input_ids"], ["logits"], to=TensorProto.FLOAT)], "g",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", "s"])], [weight])
    folder = tmp_path / "model"
    folder.mkdir()
    save_model(helper.make_model(graph), str(folder / "model.onnx"))
    result = edgeprof("run", "-m", str(folder / "model.onnx"), "--backend", "onnxruntime", "-o", str(tmp_path / "runs"))
    assert result.returncode == 2 and "leaves the model's folder; refused" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_export_extra_says_what_to_install(monkeypatch):
    import sys

    from edgeprof.export.onnx_export import require_exporter

    monkeypatch.setitem(sys.modules, "optimum.exporters.onnx", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edgeprof\[export\]'"):
        require_exporter()


def test_cli_runs_both_backends_and_joins_by_workload(tmp_path):
    result = edgeprof("run", "-m", "synth:tiny", "--backend", "llama.cpp,onnxruntime", "-q", "f32,int4,q4_0",
                      "-p", "16", "-n", "8", "-r", "2", "--warmup", "0", "--profile-ops", "--sample-hz", "0",
                      "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "operator time shares" in result.stdout and "skipped" in result.stderr
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    ran = {(r["backend"], r["model"]["quant"]) for r in records if r["status"] == "ok"}
    assert ran == {("llama.cpp", "f32"), ("llama.cpp", "q4_0"), ("onnxruntime", "fp32"), ("onnxruntime", "int4")}
    skipped = {(r["backend"], r["model"]["quant"]) for r in records if r["status"] == "skipped"}
    assert skipped == {("llama.cpp", "int4"), ("onnxruntime", "q4_0")}
    by = {(r["backend"], r["model"]["quant"]): r for r in records if r["status"] == "ok"}
    assert by[("onnxruntime", "int4")]["metrics"]["fidelity_parent_quant"] == "fp32"
    assert by[("llama.cpp", "q4_0")]["metrics"]["fidelity_parent_quant"] == "f32"
    assert "fidelity_kl_mean" not in by[("onnxruntime", "fp32")]["metrics"]  # the parent has nothing to compare
    assert by[("onnxruntime", "int4")]["metrics"]["op_profile"]["decode"]["share"]["projections"] > 0
    assert by[("onnxruntime", "fp32")]["model"]["format"] == "onnx"
    # same workload on both backends: the config ids differ (backend is part of them), the shared settings
    # do not, and each record leaves out (null) what its backend does not have
    assert by[("onnxruntime", "fp32")]["config_id"] != by[("llama.cpp", "f32")]["config_id"]
    ort, llama = by[("onnxruntime", "fp32")]["hyperparameters"], by[("llama.cpp", "f32")]["hyperparameters"]
    for key in ("batch", "prompt_tokens", "gen_tokens", "context", "sampler", "threads"):
        assert ort[key] == llama[key], key
    assert ort["kv_type"] is None and ort["gpu_layers"] is None and llama["graph_opt"] is None


def test_export_cli_writes_loadable_onnx_folders(tmp_path):
    result = edgeprof("export", "synth:tiny", "--to", "onnx", "-q", "fp32,int8", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for quant in ("fp32", "int8"):
        folder = tmp_path / quant
        assert {"model.onnx", "model.onnx.data", "config.json", "model.onnx.json"} <= {p.name for p in folder.iterdir()}
        check_onnx(folder / "model.onnx")
    sidecar = json.loads((tmp_path / "int8" / "model.onnx.json").read_text())
    assert sidecar["format"] == "onnx" and sidecar["quant"] == "int8" and sidecar["bytes"] > 0


def test_an_exporter_crash_is_a_failed_record_not_a_lost_sweep(tmp_path, tiny_source):
    import shutil

    broken = tmp_path / "broken-checkpoint"
    shutil.copytree(tiny_source.hf_folder(), broken)
    (broken / "model.safetensors").unlink()  # optimum raises its own OSError for this
    result = edgeprof("run", "-m", str(broken), "--backend", "onnxruntime", "-q", "fp32", "-r", "1", "--warmup", "0",
                      "--sample-hz", "0", "-o", str(tmp_path / "runs"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (run_dir,) = list((tmp_path / "runs").iterdir())
    (record,) = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert record["status"] == "failed" and "export failed" in record["error"]


@pytest.mark.parametrize("preset", ["tiny-qwen3", "tiny-smollm3"])
def test_families_the_fused_rewrite_cannot_take_keep_optimums_attention_and_match_llama_cpp(preset):
    # Qwen3 normalises each q/k head before the rotary embedding and SmolLM3 leaves every 4th layer unrotated;
    # the GroupQueryAttention rewrite would do neither. Their export keeps optimum's attention and says so in
    # the artifact's exporter.
    source = resolve(f"synth:{preset}")
    artifact = export_onnx(source, "fp32")
    assert artifact.exporter.endswith("optimum-onnx+last-token-lm-head")
    hp = Hyperparameters(batch=2, prompt_tokens=16, gen_tokens=32, threads=2, kv_type="f32", flash_attn="off")
    prompts = np.random.default_rng(7).integers(0, 1024, (2, 16), dtype=np.int32)
    gguf = open_session("llama.cpp", export_gguf(source, "f32").path, hp, need_logits=True)
    ort = open_session("onnxruntime", artifact.path, hp)
    try:
        assert ort.info()["kv_cache"] == "concat"
        # f32 on both sides, as in the Llama test above: accumulation order only (measured 8.5e-7, 7.6e-7)
        assert _rel_err(ort.next_token_logits(prompts), gguf.next_token_logits(prompts)) < 1e-3
        np.testing.assert_array_equal(_greedy(ort, prompts, 32), _greedy(gguf, prompts, 32))
    finally:
        gguf.close()
        ort.close()


@pytest.mark.parametrize("preset", ["tiny-gemma2", "tiny-gemma3", "tiny-phi3", "tiny-qwen3moe"])
def test_2025_families_export_to_onnx_and_match_the_numpy_reference(preset):
    """optimum exports these families (OLMoE it does not); none takes the fused rewrite, so each runs optimum's
    own attention. Gemma 2 is traced with eager attention, the only one that applies its attention soft-cap."""
    from reference_forward import ReferenceModel

    source = resolve(f"synth:{preset}")
    artifact = export_onnx(source, "fp32")
    assert artifact.exporter.endswith("optimum-onnx+last-token-lm-head")
    reference = ReferenceModel(source.hf_folder())
    prompts = np.random.default_rng(7).integers(3, 1024, (2, 40), dtype=np.int32)
    hp = Hyperparameters(batch=2, prompt_tokens=40, gen_tokens=32, threads=2)
    ort = open_session("onnxruntime", artifact.path, hp)
    try:
        got = ort.next_token_logits(prompts)
        tokens = _greedy(ort, prompts, 32)
    finally:
        ort.close()
    for row in range(2):
        expected = reference.logits(prompts[row].tolist())
        # fp32 throughout (ORT's GELU is the exact tanh form), so only the order of f32 sums differs: dot products
        # of length <= 768 in any SIMD width carry O(sqrt(K) 2**-24) ~ 1e-6 per layer at worst, on any CPU;
        # measured 5.6e-7 to 1.3e-6 here. 1e-5 leaves 8x.
        assert _rel_err(got[row], expected[-1]) < 1e-5
        # each greedy token is the reference's argmax along ORT's own continuation, up to what the 1e-5 bound
        # allows: only a top-2 gap below twice the bound could flip the choice on another CPU
        forced = reference.logits(prompts[row].tolist() + tokens[row, :-1].tolist())[39:]
        for chosen, ref in zip(tokens[row], forced):
            assert ref[chosen] >= ref.max() - 2e-5 * float(np.linalg.norm(ref))


def test_onnx_export_of_a_family_optimum_does_not_export_is_one_clear_error():
    with pytest.raises(ArtifactError, match="olmoe"):
        export_onnx(resolve("synth:tiny-olmoe"), "fp32")
