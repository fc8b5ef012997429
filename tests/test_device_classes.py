"""Achievable-rate class factors: deterministic fit, held-out error on a fixed corpus slice, the datasheet
fallback for a device without a class, the interval `predict` prints, and calibration still winning."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprof.analysis.ceilings import device_ceilings
from edgeprof.analysis.corpus import load_corpus
from edgeprof.analysis.device_classes import (ClassFactors, corpus_sample, fit_class, interval_text,
                                              leave_one_device_out, load_class_factors, within)
from edgeprof.analysis.fit import UNFITTABLE, describe
from edgeprof.hardware.devices import DeviceProfile, get_profile
from edgeprof.quant import GGUF_QUANTS

Q4 = GGUF_QUANTS["q4_k_m"]


def _slice():
    """A small fixed slice: llama.cpp's Apple-silicon scoreboard (LLaMA-2 7B, q4_0/q8_0/f16, pp512 and tg128) for
    the M1 and M2 families: twelve devices, one source, one build, published to compare exactly these chips."""
    rows = [row for row in load_corpus() if row.where.startswith("llamacpp-apple-silicon.jsonl:")
            and row.device.startswith(("apple-m1", "apple-m2")) and row.device_class == "apple-gpu"]
    profiles = {device: get_profile(device) for device in {row.device for row in rows}}
    samples = [corpus_sample(row, profiles[row.device])[0] for row in rows]
    return [s for s in samples if s is not None]


def test_the_fit_is_deterministic():
    samples = _slice()
    first, second = fit_class("apple-gpu", samples), fit_class("apple-gpu", list(reversed(samples)))
    assert first.to_dict() == second.to_dict()
    assert first.decode["stream"] > 0 and first.prefill["matmul:legacy"] > 0


def test_held_out_error_on_a_fixed_slice_stays_under_the_target():
    samples = _slice()
    assert len({s.device for s in samples}) >= 10
    results = leave_one_device_out(samples)
    good, total = within(results, "decode")
    assert total >= 20 and good >= 0.75 * total
    good, total = within(results, "prefill")
    assert total >= 20 and good >= 0.60 * total


def test_the_committed_factors_cover_the_corpus_classes_with_their_error():
    factors = load_class_factors()
    for name in ("nvidia-gpu", "apple-gpu", "amd-gpu", "arm-cpu", "x86-cpu"):
        assert name in factors, name
        assert factors[name].decode["stream"] > 0
        assert factors[name].heldout["decode"]["rows"] > 0


def test_a_device_without_a_class_falls_back_to_the_datasheet_with_a_warning():
    data = dict(get_profile("raspberry-pi-5").data)
    data.pop("class")
    classless = DeviceProfile("my-board", "My board", "edge", data)
    ceilings = device_ceilings(classless, Q4, on_gpu=False)
    assert ceilings.source == "datasheet" and not ceilings.by_category
    assert "names no device class" in ceilings.note
    classed = device_ceilings(get_profile("raspberry-pi-5"), Q4, on_gpu=False)
    assert "arm-cpu class factors" in classed.source and classed.by_category and not classed.note


def test_datasheet_mode_ignores_the_class_factors():
    profile = get_profile("h200")
    assert device_ceilings(profile, Q4, True, mode="datasheet").source == "datasheet"
    assert "nvidia-gpu class factors" in device_ceilings(profile, Q4, True).source


def test_calibration_still_overrides_the_class_factors():
    fit = {"decode": {"weight_bytes": 1e-12}, "prefill": {"weight_flops": 1e-14}, "matvec_max_batch": 8}
    calibration = {"gpu_bandwidth_gbps": 4000, "gpu_tflops": {"bf16": 800}, "llama_cpp_gpu": {"q4_k_m": fit}}
    assert device_ceilings(get_profile("h200"), Q4, True, calibration).source == "calibrated with llama.cpp"


def test_interval_text_scales_the_held_out_quantiles_and_says_when_too_few_devices():
    held = {"decode": {"rows": 40, "devices": 12, "p10_ratio": 0.8, "p90_ratio": 1.1},
            "prefill": {"rows": 4, "devices": 2, "p10_ratio": 0.5, "p90_ratio": 2.0}}
    factors = ClassFactors("nvidia-gpu", {}, {}, ("a",), 1, held)
    assert interval_text(factors, "decode", 100.0) == "80 % of held-out devices within 80–110 t/s"
    # a time inverts the rate ratios: a device 0.8x as fast takes 1/0.8 as long
    assert interval_text(factors, "decode", 10.0, "ms", is_time=True) == "80 % of held-out devices within 9.09–12.5 ms"
    assert "too few devices" in interval_text(factors, "prefill", 100.0)
    # batched predictions state the error of batched held-out runs, or that there were none
    assert interval_text(factors, "decode", 100.0, batch=8) == "no nvidia-gpu device held out at batch > 1: no interval"
    held["decode@batch>1"] = {"rows": 30, "devices": 3, "p10_ratio": 0.5, "p90_ratio": 1.0}
    assert interval_text(factors, "decode", 100.0, batch=8) == "80 % of held-out devices within 50–100 t/s"


def test_a_cost_the_runs_cannot_separate_says_so_instead_of_infinity():
    text = describe({"decode": {"weight_bytes": 1e-12, "attention_flops": 0.0}, "prefill": {"weight_flops": 1e-14}})
    assert "inf" not in text and f"attention: {UNFITTABLE}" in text


def edgeprof(*args, env=None):
    env = dict(os.environ, COLUMNS="250", **(env or {}))
    return subprocess.run([sys.executable, "-m", "edgeprof", *args], capture_output=True, text=True, env=env, timeout=300)


def test_predict_prints_the_interval_and_the_factors_it_used():
    result = edgeprof("predict", "-m", "synth:llama-3.2-1b", "-d", "h200", "-b", "1,8")
    assert result.returncode == 0, result.stderr
    assert "nvidia-gpu class factors" in result.stdout
    assert "batch 1: decode ≈" in result.stdout and "80 % of held-out devices within" in result.stdout
    sheet = edgeprof("predict", "-m", "synth:llama-3.2-1b", "-d", "h200", "--ceilings", "datasheet")
    assert sheet.returncode == 0 and "datasheet ceilings" in sheet.stdout and "held-out" not in sheet.stdout
    few = edgeprof("predict", "-m", "synth:llama-3.2-1b", "-d", "jetson-orin-nano-8gb")
    assert few.returncode == 0 and "jetson-gpu has too few devices to state an interval" in few.stdout
    bad = edgeprof("predict", "-d", "h200", "--ceilings", "peak")
    assert bad.returncode == 2 and "--ceilings must be one of" in bad.stderr


def test_predict_warns_for_a_profile_without_a_class(isolated_env):
    folder = Path(isolated_env["config"]) / "devices"
    folder.mkdir(parents=True, exist_ok=True)
    board = folder / "my-board.yaml"
    board.write_text("name: my-board\nkind: edge\nsource: https://example.org/board\n"
                     "cpu: {arch: aarch64, cores: 4, tflops_fp32: 0.1}\nmemory: {gb: 8, bandwidth_gbps: 17}\n")
    try:
        result = edgeprof("predict", "-m", "synth:llama-3.2-1b", "-d", "my-board")
    finally:
        board.unlink()
    assert result.returncode == 0, result.stderr
    assert "warning: my-board names no device class" in result.stderr and "datasheet ceilings" in result.stdout


@pytest.mark.parametrize("path", ["data/device_classes.json"])
def test_the_committed_factors_file_is_the_scripts_output_format(path):
    data = json.loads((Path(__file__).resolve().parents[1] / path).read_text())
    assert data["generated_by"] == "scripts/fit_device_classes.py" and data["inputs"]["corpus_rows_used"] > 100


def test_profiles_state_their_kernel_groups():
    from edgeprof.analysis.device_classes import kernel_groups

    assert kernel_groups(get_profile("h200"), True) == ("sm_90", "cuda:mma")
    assert kernel_groups(get_profile("rtx-4090"), True) == ("sm_89", "cuda:mma")
    assert kernel_groups(get_profile("jetson-nano"), True) == ("sm_53", "cuda:no-dp4a")
    assert kernel_groups(get_profile("tesla-p40"), True) == ("sm_61", "cuda:dp4a")
    assert kernel_groups(get_profile("raspberry-pi-5"), False) == ("arm:dotprod",)
    assert kernel_groups(get_profile("aws-graviton3"), False) == ("arm:i8mm",)
    assert kernel_groups(get_profile("amd-ryzen-9-7950x"), False) == ("x86:avx512-vnni",)
    assert kernel_groups(get_profile("apple-m1-8c"), True) == ("apple7",)
    assert kernel_groups(get_profile("generic-x86-64"), False) == ()


def test_an_isa_field_must_name_known_features_and_a_source():
    from edgeprof.errors import CatalogError
    from edgeprof.hardware.devices import validate_profile

    base = {"name": "b", "kind": "edge", "source": "https://example.org"}
    validate_profile({**base, "isa": {"cpu": ["neon", "dotprod"], "source": "https://example.org/trm"}}, "b.yaml")
    for isa, message in (({"cpu": ["avx9"], "source": "x"}, "isa.cpu"), ({"gpu": "cuda12", "source": "x"}, "isa.gpu"),
                         ({"cpu": ["neon"]}, "isa.source")):
        with pytest.raises(CatalogError, match=message):
            validate_profile({**base, "isa": isa}, "b.yaml")


def test_a_kernel_group_replaces_the_class_matmul_factor_only_with_two_devices():
    samples = _slice()  # the M1 family is apple7, the M2 family apple8 (Metal GPU families)
    groups = {s.device: s.groups for s in samples}
    assert groups["apple-m1-8c"] == ("apple7",) and groups["apple-m2-8c"] == ("apple8",)
    fitted = fit_class("apple-gpu", samples)
    assert set(fitted.groups) == {"apple7", "apple8"}
    assert fitted.groups["apple7"]["prefill"]["matmul:legacy"] > 0 and "stream" not in fitted.groups["apple7"]["decode"]
    decode, prefill = fitted.phase_factors(("apple7",))
    assert prefill["matmul:legacy"] == fitted.groups["apple7"]["prefill"]["matmul:legacy"]
    assert decode["stream"] == fitted.decode["stream"]  # every other cost stays the class's
    # one M2 left: too few for its own group, so an M2 takes the class's factors
    lone = [s for s in samples if s.device in {"apple-m2-8c"} or "apple7" in s.groups]
    assert "apple8" not in fit_class("apple-gpu", lone).groups
    assert fit_class("apple-gpu", lone).phase_factors(("apple8",)) == (fit_class("apple-gpu", lone).decode,
                                                                      fit_class("apple-gpu", lone).prefill)
    # the held-out results carry both predictions: with the group and with the class alone
    results = leave_one_device_out(samples)
    assert all(r["ratio_class"] for r in results) and any(r["group"] == "apple7" for r in results)


def test_the_h200_takes_the_hopper_group_prefill_factor():
    profile = get_profile("h200")
    ceilings = device_ceilings(profile, Q4, True)
    assert "kernel group sm_90" in ceilings.source and "h100-sxm" in ceilings.source


def test_calibrate_prints_an_unfittable_rate_as_such(monkeypatch):
    """`edgeprof calibrate`'s own output (not only `describe`): a cost the fit dropped at zero reads as not
    fittable, never "inf TFLOP/s"; the calibration itself is replaced by a fixed result (no measuring here)."""
    from typer.testing import CliRunner

    import edgeprof.analysis.calibration as calibrate_module
    import edgeprof.hardware.devices as devices_module
    from edgeprof.cli import app

    fit = {"decode": {"kernels": 3e-6, "weight_bytes": 2e-13, "attention_flops": 0.0},
           "prefill": {"kernels": 2e-5, "weight_flops": 1e-14, "attention_flops": 0.0}, "matvec_max_batch": 8}
    result = {"threads": 2, "memory_bandwidth_gbps": 10.0, "cpu_tflops_fp32": 0.1, "cpu_int8": "n/a", "gpu": "none",
              "llama_cpp_gpu": {"presets": ["smollm2-135m"], "q4_k_m": fit}, "path": "/tmp/calibration.json"}
    monkeypatch.setattr(calibrate_module, "calibrate", lambda *args, **kwargs: result)
    monkeypatch.setattr(devices_module, "detect_profile", lambda facts: get_profile("h200"))
    out = CliRunner().invoke(app, ["calibrate"])
    assert out.exit_code == 0, out.output
    assert "inf" not in out.output.replace("info", "")
    assert f"attention: {UNFITTABLE}" in out.output and "matmul 100 TFLOP/s" in out.output


def test_an_earlier_calibration_that_stored_an_infinite_rate_prints_not_fittable():
    old = {"weight_gbps": 10.0, "matmul_tflops": 0.1, "decode_attention_tflops": float("inf"),
           "prefill_attention_tflops": 0.0}
    text = describe(old)
    assert "inf" not in text and text.count(f"attention: {UNFITTABLE}") == 2
