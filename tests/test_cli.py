"""The command line end to end, as a user runs it (a subprocess, real exit codes and output)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def edgeprof(*args, cwd=None):
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "edgeprof", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def test_run_writes_a_complete_run_directory(tmp_path):
    result = edgeprof("run", "-m", "synth:tiny", "-q", "q4_0,q8_0", "-p", "16", "-n", "8", "-b", "1,2", "-r", "2",
                      "--warmup", "0", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "decode t/s" in result.stdout and "run directory:" in result.stdout
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["libraries"]["llama-cpp-python"] and manifest["device"]["host"]["logical_cores"] >= 1
    assert len(manifest["artifacts"]) == 2 and manifest["configurations"] == 4
    import pandas as pd

    records = pd.read_json(run_dir / "records.jsonl", lines=True)
    assert len(records) == 8 and set(records["status"]) == {"ok"}
    settings = pd.json_normalize(records["hyperparameters"])
    assert sorted(settings["batch"].unique()) == [1, 2]
    summary = pd.read_csv(run_dir / "summary.csv")
    assert len(summary) == 4 and (summary["decode_tps_mean"] > 0).all()


def test_models_list_and_show():
    listing = edgeprof("models")
    assert listing.returncode == 0 and "llama-3.1-8b" in listing.stdout and "8,030M" in listing.stdout
    detail = edgeprof("models", "show", "qwen2.5-0.5b")
    assert detail.returncode == 0 and "494,032,768" in detail.stdout


def test_export_copies_artifacts_out(tmp_path):
    result = edgeprof("export", "synth:tiny", "--to", "gguf", "-q", "q4_k_m,q8_0", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "synth-tiny.q4_k_m.gguf", "synth-tiny.q4_k_m.gguf.json", "synth-tiny.q8_0.gguf", "synth-tiny.q8_0.gguf.json"]


def test_python_dash_m_help():
    result = edgeprof("--help")
    assert result.returncode == 0 and "run" in result.stdout and "export" in result.stdout


def _bad_inputs(tmp_path: Path, tiny_gguf_f32) -> list[tuple[list[str], str]]:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("just text")
    truncated = tmp_path / "cut.gguf"
    data = Path(tiny_gguf_f32.path).read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    a_file = tmp_path / "occupied"
    a_file.write_text("")
    return [
        (["run", "-m", str(tmp_path / "missing.gguf")], "no such file"),
        (["run", "-m", str(not_gguf)], "not a GGUF"),
        (["run", "-m", str(truncated)], "truncated"),
        (["run", "-m", "synth:nosuchmodel"], "unknown model preset"),
        (["run", "-m", "synth:tiny", "-q", "q9_9"], "unknown GGUF quantization"),
        (["run", "-m", "synth:tiny", "-p", "100", "-n", "100", "-c", "128"], "exceed the context"),
        (["run", "-m", "synth:tiny", "-p", "100000"], "beyond the model's trained context of 2048"),
        (["run", "-m", tiny_gguf_f32.path, "-p", "3000"], "beyond the model's trained context of 2048"),  # GGUF metadata
        (["run", "-m", "synth:tiny", "-b", "0"], "batch must be > 0"),
        (["run", "-m", "synth:tiny", "-b", "one"], "comma-separated integers"),
        (["run", "-m", "synth:tiny", "-o", str(a_file / "runs")], "cannot write the output folder"),
        (["export", "synth:tiny", "-q", "q4_k_m", "-o", str(a_file / "x")], "cannot write the output folder"),
        (["run", "-m", "synth:tiny", "--device", "jetson-nonexistent"], "unknown device profile"),
        (["models", "show", "nosuch"], "unknown model preset"),
        (["run", "-m", "synth:tiny", "-ngl", "-1"], "CPU-only"),
        (["run", "-m", "synth:tiny", "--emulate"], "--emulate needs --device"),
        (["run", "-m", "synth:tiny", "--device", "jetson"], "not a Jetson"),
        (["devices", "show", "jetson-orin-nano"], "did you mean"),
        (["run", "-m", "synth:tiny", "--devices", "orin"], "--devices names fleet devices and needs --fleet"),
        (["sweep", "scripts/sweeps/batch.yaml", "--devices", "orin"], "needs --fleet"),
    ]


def test_bad_input_is_one_line_and_exit_code_2(tmp_path, tiny_gguf_f32):
    for args, message in _bad_inputs(tmp_path, tiny_gguf_f32):
        result = edgeprof(*args, "-o", str(tmp_path / "out")) if args[0] == "run" and "-o" not in args else edgeprof(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, (args, result.stderr)
        assert message in lines[0] and "Traceback" not in result.stderr, (args, lines[0])
    # Nothing was started for bad input: no run directory was left behind.
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_default_run_on_a_real_sized_preset(tmp_path):
    """`edgeprof run` with its defaults (SmolLM2-135M, q4_k_m and f16): minutes on 2 cores."""
    result = edgeprof("run", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "smollm2-135m" in result.stdout


def test_predict_answers_fit_and_speed_for_a_device():
    result = edgeprof("predict", "--model", "synth:llama-3.2-1b", "--device", "jetson-orin-nano-8gb", "--quant", "q4_k_m",
                      "--batch", "1,8", "--prompt", "512", "--gen", "128")
    assert result.returncode == 0, result.stderr
    assert "footsteps of operations" in result.stdout and "yes" in result.stdout and "compute-bound at batch" in result.stdout
    too_big = edgeprof("predict", "--model", "synth:llama-3.1-8b", "--device", "jetson-orin-nano-8gb", "--quant", "f16")
    assert too_big.returncode == 0 and "GB over" in too_big.stdout


def test_calibrate_stores_a_local_profile(isolated_env):
    result = edgeprof("calibrate", "--no-gpu", "--no-llama")
    assert result.returncode == 0, result.stderr
    (stored,) = (Path(isolated_env["config"]) / "calibration").glob("*.json")
    data = json.loads(stored.read_text())
    assert data["memory_bandwidth_gbps"] > 0 and data["cpu_tflops_fp32"] > 0
    assert data["cpu_int8"].startswith("unavailable")


def test_predict_on_a_gpu_uses_its_llama_cpp_fit(isolated_env):
    """The committed H100 calibration (fitted from real runs) makes batch-1 decode overhead-bound."""
    stored = Path(isolated_env["config"]) / "calibration" / "h100-sxm.json"
    stored.parent.mkdir(parents=True, exist_ok=True)
    committed = Path(__file__).parent.parent / "results" / "roofline" / "h100" / "fitted" / "h100-sxm.json"
    stored.write_text(committed.read_text())
    result = edgeprof("predict", "--model", "synth:llama-3.2-1b", "--device", "h100-sxm", "--batch", "1,16",
                      "--prompt", "128", "--gen", "32")
    assert result.returncode == 0, result.stderr
    assert "calibrated with llama.cpp" in result.stdout
    summary = [line for line in result.stdout.splitlines() if re.match(r"│\s+1 │", line)]
    assert summary and "overhead" in summary[0]
