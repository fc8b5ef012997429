"""Analysis from the run directory alone, and catalogs that come from edgeprof's own files when installed."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from edgeprof.analysis.compare import Run, predict_row
from edgeprof.hardware.devices import calibration_path
from edgeprof.hardware.devices import get_profile

ROOT = Path(__file__).resolve().parent.parent
ROW = {"backend": "llama.cpp", "model": "synth:smollm2-135m", "quant": "q4_k_m", "batch": 1, "prompt_tokens": 128,
       "gen_tokens": 64, "kv_type": "f16", "gpu_layers": 0, "sampler": "greedy", "n_ubatch": 512}


def test_predictions_come_from_the_run_not_from_the_host_analysing_it(isolated_env):
    profile = get_profile("raspberry-pi-5")  # datasheet figures of its own, so it predicts uncalibrated
    stored = {"device": {"profile": profile.name}, "calibration": None,
              "device_profile": {"name": profile.name, "display_name": profile.display_name, "kind": profile.kind,
                                 "data": profile.data}}
    run = Run(Path("run"), stored, [ROW])
    before = predict_row(run, ROW).decode_tps
    path = calibration_path(profile.name)
    previous = path.read_text() if path.exists() else None
    path.parent.mkdir(parents=True, exist_ok=True)
    # a calibration for that profile appears on the analysing host afterwards (any CPU calibration will do)
    path.write_text(json.dumps(json.loads((ROOT / "results/roofline/cpu-host/roofline_validation_cpu.json").read_text())["calibration"]))
    try:
        assert predict_row(run, ROW).decode_tps == before  # the run's own (absent) calibration still rules
        legacy = Run(Path("old"), {"device": {"profile": profile.name}}, [ROW])
        assert legacy.prediction_basis != "manifest"
        assert predict_row(legacy, ROW).decode_tps != before  # older runs: today's calibration, as compare notes
    finally:
        if previous is None:
            path.unlink()
        else:
            path.write_text(previous)


def test_installed_wheel_reads_its_own_catalog_not_site_packages_models(tmp_path):
    """In a wheel install the folder above the package is site-packages; another package's `models/`
    there must not be taken for edgeprof's presets."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True)
    (wheel,) = wheels.glob("edgeprof-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    (site / "models").mkdir()
    (site / "models" / "other-package.yaml").write_text("{ this is: [not edgeprof's")  # unreadable as YAML
    env = {**os.environ, "PYTHONPATH": str(site), "EDGEPROF_CONFIG_DIR": str(tmp_path / "config")}
    probe = ("import edgeprof, edgeprof.models.presets as p, edgeprof.hardware.devices as d; "
             "print(edgeprof.__file__); print(len(p.list_presets())); print(len(d.list_profiles()))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-800:]
    where, presets, profiles = result.stdout.split()
    assert where.startswith(str(site))  # the wheel's copy, not the checkout
    assert int(presets) == len(list((ROOT / "models").glob("*.yaml")))
    assert int(profiles) == len(list((ROOT / "devices").glob("*.yaml")))


def test_a_gguf_files_row_is_predicted_from_its_own_metadata_and_an_unmodelled_one_is_not(tmp_path, tiny_gguf_f32):
    from test_gguf_facts import _write_unmodelled_gguf

    profile = get_profile("raspberry-pi-5")
    stored = {"device": {"profile": profile.name}, "calibration": None,
              "device_profile": {"name": profile.name, "display_name": profile.display_name, "kind": profile.kind,
                                 "data": profile.data}}
    row = dict(ROW, model="gguf:tiny.f32.gguf", model_spec=str(tiny_gguf_f32.path), quant="f32")
    run = Run(Path("run"), stored, [row])
    preset_row = dict(ROW, model="synth:tiny", quant="f32")
    assert predict_row(run, row).decode_tps == predict_row(run, preset_row).decode_tps  # the file is synth:tiny's
    unmodelled = dict(row, model_spec=str(_write_unmodelled_gguf(tmp_path / "tiny-cohere2.gguf")))
    assert predict_row(run, unmodelled) is None
    assert predict_row(run, dict(row, model_spec=str(tmp_path / "gone.gguf"))) is None  # not on this host
