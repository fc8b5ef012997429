"""Backends are plug-ins: the two built-in ones come from the registry, and a backend defined only in a test
module (`fake_backend.py`) plans, exports, runs, profiles and records through edgeprof unchanged."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from edgeprof.backends import registry
from edgeprof.backends.op_profile import ORT_METHOD, OpProfile
from edgeprof.config import Hyperparameters
from edgeprof.errors import ConfigError

HERE = Path(__file__).parent


@pytest.fixture
def fake(monkeypatch):
    """The fake backend registered for this process and every child it starts."""
    monkeypatch.setenv(registry.PLUGINS_ENV, "fake_backend")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    return registry.get("fake")


def test_builtin_backends_register_what_the_callers_used_to_compare_names_for():
    llama, ort = registry.get("llama.cpp"), registry.get("ORT")
    assert registry.names()[:2] == ("llama.cpp", "onnxruntime") and registry.get("llamacpp") is llama
    assert (llama.format, ort.format) == ("gguf", "onnx") and registry.for_format("onnx") is ort
    assert llama.quants.canonical("Q4_K_M") == "q4_k_m" and ort.quants.canonical("f16") == "fp16"
    assert not llama.quants.offers("int4") and not ort.quants.offers("q4_k_m")
    assert "kv_type" in llama.option_names and "kv_type" not in ort.option_names
    assert llama.uses_gpu(Hyperparameters(gpu_layers=-1)) and not llama.uses_gpu(Hyperparameters())
    assert ort.uses_gpu(Hyperparameters(provider="cuda")) and not ort.uses_gpu(Hyperparameters(provider="cpu"))
    with pytest.raises(ConfigError, match="unknown backend 'tensorflow' \\(available: llama.cpp, onnxruntime"):
        registry.get("tensorflow")


def test_the_recorded_defaults_are_the_builtin_backends_own():
    """A configuration built without a backend reads llama.cpp's and ONNX Runtime's defaults, as before."""
    from edgeprof.config import RECORDED_DEFAULTS

    builtin = {**registry.get("llama.cpp").options.defaults(), **registry.get("onnxruntime").options.defaults()}
    assert builtin == RECORDED_DEFAULTS
    assert Hyperparameters(kv_type="f16", provider="cpu") == Hyperparameters()  # a default given is a default


def test_a_backends_settings_are_its_own_and_records_keep_their_shape():
    full = Hyperparameters(batch=2, kv_type="q8_0", graph_opt="basic")
    llama = full.for_backend(registry.get("llama.cpp").options)
    ort = full.for_backend(registry.get("onnxruntime").options)
    assert (llama.kv_type, llama.n_ubatch, llama.graph_opt) == ("q8_0", 512, None)  # defaults filled, ORT's None
    assert (ort.graph_opt, ort.provider, ort.kv_type) == ("basic", "cpu", None)
    # every record lists the same keys, whatever its backend, as before backends were plug-ins
    assert set(llama.to_dict()) == set(ort.to_dict()) and "n_batch" in ort.to_dict()
    assert Hyperparameters.from_dict(llama.to_dict()) == llama and Hyperparameters.from_dict(ort.to_dict()) == ort
    with pytest.raises(AttributeError, match="no setting 'kv_typo'"):
        _ = llama.kv_typo


def test_older_records_profiles_read_as_one_typed_shape():
    old_ort = {"prefill": {"ms": {"ffn": 1.0}, "share": {"ffn": 1.0}, "node_ms": 1.0, "run_ms": 1.2},
               "decode": {"ms": {"ffn": 0.5}, "share": {"ffn": 1.0}, "node_ms": 0.5, "run_ms": 0.6},
               "decode_steps_profiled": 4}
    profile = OpProfile.from_dict(old_ort)
    assert (profile.backend, profile.method, profile.decode.run_ms) == ("onnxruntime", ORT_METHOD, 0.6)
    assert profile.decode.coverage is None
    llama = {**old_ort, "backend": "llama.cpp", "method": "eval-callback",
             "decode": {**old_ort["decode"], "coverage": 0.95, "dilation": 1.1}, "decode_by_layer": {"0": {"ffn": 0.2}},
             "overhead_us_per_window": 3.0}
    typed = OpProfile.from_dict(llama)
    assert typed.decode.coverage == 0.95 and typed.details == {"overhead_us_per_window": 3.0}
    assert typed.to_dict() == llama  # what records hold survives the round trip unchanged


def test_a_plugin_backend_plans_beside_the_builtin_ones(fake):
    from edgeprof.bench.plan import expand

    configs = expand(["synth:tiny"], ["fq4", "q4_0"], ["pretend", "llama.cpp"],
                     {"batch": [1], "prompt_tokens": [16], "gen_tokens": [8], "threads": [2], "fake_knob": [3]})
    by = {(c.backend, c.quant): c for c in configs}
    assert set(by) == {("fake", "fq4"), ("fake", "q4_0"), ("llama.cpp", "fq4"), ("llama.cpp", "q4_0")}
    assert by[("fake", "fq4")].skip == "" and by[("fake", "fq4")].format == "fakefmt"
    assert by[("fake", "fq4")].hp.fake_knob == 3 and by[("fake", "fq4")].hp.kv_type is None
    assert by[("fake", "q4_0")].skip == "q4_0 is a GGUF quantization; fake does not run it"
    assert by[("llama.cpp", "fq4")].skip == "fq4 is a FAKE quantization; llama.cpp does not run it"
    # the plug-in's setting never reaches another backend's record or ids
    assert "fake_knob" not in by[("llama.cpp", "q4_0")].hp.to_dict()
    with pytest.raises(ConfigError, match="fake knob must be >= 1"):
        expand(["synth:tiny"], ["fq4"], ["fake"], {"fake_knob": [0]})


def test_a_plugin_backend_runs_end_to_end_in_edgeprofs_own_processes(fake, tmp_path):
    from test_cli import edgeprof

    sweep = tmp_path / "fake.yaml"
    sweep.write_text("name: fake\nmodels: [synth:tiny]\nquants: [fq8]\nbackends: [fake]\n"
                     "hyperparameters: {prompt: [16], gen: [8], fake_knob: [5]}\n"
                     "repetitions: 2\nwarmup: 0\nsample_hz: 0\nfidelity: false\nprofile_ops: true\n")
    result = edgeprof("sweep", str(sweep), "-o", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    records = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"] and {r["backend"] for r in records} == {"fake"}
    assert records[0]["model"]["format"] == "fakefmt" and records[0]["hyperparameters"]["fake_knob"] == 5
    assert records[0]["metrics"]["decode_tps"] > 0
    profile = records[0]["metrics"]["op_profile"]  # made in the worker, by the plug-in's profiler
    assert profile["backend"] == "fake" and profile["fake_knob"] == 5 and profile["decode"]["share"]["ffn"] == 0.5
    assert sys.modules.get("fake_backend") is not None  # this process planned through it too


def test_registering_backends_loads_no_native_library():
    """`edgeprof --help` and planning's look-ups import neither llama_cpp, onnxruntime nor torch: each
    backend imports its library inside its entry points."""
    import subprocess

    code = ("import sys; from typer.testing import CliRunner; from edgeprof.cli import app; "
            "from edgeprof.backends import registry; "
            "assert CliRunner().invoke(app, ['--help']).exit_code == 0; "
            "assert [b.quants.canonical(b.quants.defaults[0]) for b in registry.backends().values()]; "
            "print(sorted(m for m in ('llama_cpp', 'onnxruntime', 'torch', 'optimum') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
