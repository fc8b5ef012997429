"""A non-editable install carries the YAML catalogs inside the package."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_catalogs_and_an_installed_copy_finds_them(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("edgeprof-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgeprof/_catalog/models/llama-3.1-8b.yaml" in names
    assert "edgeprof/_catalog/devices/generic-x86-64.yaml" in names
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    probe = ("import edgeprof, json; from edgeprof.models.presets import list_presets; from edgeprof.hardware.devices import "
             "list_profiles; print(json.dumps([edgeprof.__file__, [p.name for p in list_presets()], "
             "[d.name for d in list_profiles()]]))")
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env,
                         check=True).stdout
    import json

    module_file, presets, devices = json.loads(out)
    assert module_file.startswith(str(site))  # the installed copy, not the checkout
    assert "smollm2-135m" in presets and "tiny" in presets
    assert "generic-x86-64" in devices
