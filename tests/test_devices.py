import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeprof.hardware.devices import HostFacts, detect_profile, get_profile, list_profiles, resolve_device
from edgeprof.errors import CatalogError, ConfigError
from fake_sensors import write

REQUIRED = ["jetson-orin-nano-8gb", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb", "jetson-agx-xavier", "jetson-nano",
            "raspberry-pi-5", "generic-x86-64", "generic-arm64", "h100-sxm", "h200", "a100-80gb", "rtx-6000-ada", "l4",
            "rtx-4090"]


def facts(machine="x86_64", memory_gb=64.0, cores=16):
    return HostFacts("host", machine, "cpu", cores, cores, memory_gb, "Linux")


def test_every_required_profile_is_shipped_valid_and_sourced():
    profiles = {p.name: p for p in list_profiles()}
    assert set(REQUIRED) <= set(profiles)
    for name in REQUIRED:
        profile = profiles[name]
        if not profile.is_generic:
            assert profile.data["source"].startswith(("http", '"http')) or "http" in profile.data["source"], name
            assert profile.memory_gb, name


def test_at_least_25_real_devices_each_with_a_class_and_sourced_figures():
    from edgeprof.hardware.devices import DEVICE_CLASSES

    real = [p for p in list_profiles() if not p.is_generic]
    assert len(real) >= 25
    for profile in real:
        assert profile.data.get("class") in DEVICE_CLASSES, profile.name
        assert "http" in profile.data["source"], profile.name
        bandwidth = (profile.data.get("accelerator") or {}).get("bandwidth_gbps") or profile.data["memory"]["bandwidth_gbps"]
        assert bandwidth > 0 and profile.memory_gb, profile.name


def test_device_class_of_each_side():
    assert get_profile("h200").device_class(on_gpu=True) == "nvidia-gpu"
    assert get_profile("jetson-orin-nano-8gb").device_class(on_gpu=False) == "arm-cpu"  # derived from cpu.arch
    assert get_profile("apple-m2-max-38c").device_class(on_gpu=False) == "apple-cpu"  # stated
    assert get_profile("raspberry-pi-5").device_class(on_gpu=True) is None  # no GPU to run on


def test_a_profile_answers_to_its_published_aliases():
    assert get_profile("apple-m2-max").name == "apple-m2-max-38c"


def test_the_most_specific_nvml_name_wins(tmp_path):
    for gpu, expected in (("NVIDIA GeForce RTX 4070 Ti SUPER", "rtx-4070-ti-super"), ("NVIDIA GeForce RTX 4070", "rtx-4070"),
                          ("NVIDIA GeForce RTX 4090 D", "rtx-4090d")):
        assert detect_profile(facts(), tmp_path, [gpu]).name == expected


def test_orin_nano_super_mode_overlays_the_base_figures():
    base, sup = get_profile("jetson-orin-nano-8gb"), get_profile("jetson-orin-nano-8gb:super")
    assert base.data["memory"]["bandwidth_gbps"] == 68 and sup.data["memory"]["bandwidth_gbps"] == 102
    assert sup.data["power"]["tdp_w"] == 25 and sup.data["memory"]["gb"] == 8  # untouched fields stay
    with pytest.raises(CatalogError, match="no mode 'turbo'"):
        get_profile("jetson-orin-nano-8gb:turbo")


@pytest.mark.parametrize("text,message", [
    ("memory: {gb: 8, bandwidth_gbps: fast}\n", r"mybox.yaml: field 'memory.bandwidth_gbps' must be a number"),
    ("class: toaster\n", r"mybox.yaml: field 'class' must be one of"),
    ("cpu: {class: fpga}\n", r"mybox.yaml: field 'cpu.class' must be one of"),
    ("aliases: box\n", r"mybox.yaml: field 'aliases' must be a list"),
])
def test_malformed_user_profile_names_file_and_field(isolated_env, text, message):
    folder = Path(isolated_env["config"]) / "devices"
    bad = write(folder / "mybox.yaml", "name: mybox\nkind: edge\nsource: me\n" + text)
    try:
        with pytest.raises(CatalogError, match=message):
            list_profiles()
        bad.write_text("name: mybox\nkind: phone\nsource: me\n")
        with pytest.raises(CatalogError, match="field 'kind' must be one of"):
            list_profiles()
    finally:
        bad.unlink()


def test_unknown_device_suggests_close_names():
    with pytest.raises(CatalogError, match="did you mean jetson-orin-nano-8gb"):
        get_profile("jetson-orin-nano")


@pytest.mark.parametrize("model,memory,expected", [
    ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", 7.4, "jetson-orin-nano-8gb"),
    ("NVIDIA Jetson AGX Orin Developer Kit", 61.4, "jetson-agx-orin-64gb"),
    ("NVIDIA Jetson Nano Developer Kit", 3.9, "jetson-nano"),
    ("Raspberry Pi 5 Model B Rev 1.0", 7.9, "raspberry-pi-5"),
])
def test_detection_from_a_fake_device_tree(tmp_path, model, memory, expected):
    write(tmp_path / "proc/device-tree/model", model + "\x00")
    assert detect_profile(facts("aarch64", memory), root=tmp_path, gpu_names=[]).name == expected


def test_detection_by_nvml_name_then_generic_cpu(tmp_path):
    assert detect_profile(facts(), root=tmp_path, gpu_names=["NVIDIA H100 80GB HBM3"]).name == "h100-sxm"
    assert detect_profile(facts(), root=tmp_path, gpu_names=["NVIDIA L4"]).name == "l4"
    assert detect_profile(facts(), root=tmp_path, gpu_names=[]).name == "generic-x86-64"
    assert detect_profile(facts("aarch64"), root=tmp_path, gpu_names=[]).name == "generic-arm64"


def test_device_jetson_resolves_only_on_a_jetson(tmp_path):
    with pytest.raises(CatalogError, match="--emulate"):
        resolve_device("jetson", facts(), root=tmp_path, gpu_names=[])
    write(tmp_path / "proc/device-tree/model", "NVIDIA Jetson AGX Orin Developer Kit")
    assert resolve_device("jetson", facts("aarch64", 61.4), root=tmp_path, gpu_names=[]).name == "jetson-agx-orin-64gb"


def test_naming_another_device_needs_emulate(tmp_path):
    with pytest.raises(CatalogError, match="add --emulate"):
        resolve_device("jetson-orin-nano-8gb", facts(), root=tmp_path, gpu_names=[])
    assert resolve_device("jetson-orin-nano-8gb", facts(), emulate=True, root=tmp_path, gpu_names=[]).kind == "edge"
    assert resolve_device("generic-x86-64", facts(), root=tmp_path, gpu_names=[]).is_generic


def test_emulation_refuses_a_model_that_does_not_fit():
    from edgeprof.bench.plan import expand
    from edgeprof.hardware.emulation import plan_emulation

    emulation = plan_emulation(get_profile("jetson-orin-nano-8gb"), facts(), [])
    (config,) = expand(["synth:llama-3.1-8b"], ["f16"], ["llama.cpp"], {"gpu_layers": [0]})
    with pytest.raises(ConfigError, match=r"needs 16\.\d+ GB .* has 8 GB: 8\.\d+ GB too much"):
        emulation.adapt(config)
    (small,) = expand(["synth:llama-3.2-1b"], ["q4_k_m"], ["llama.cpp"], {"gpu_layers": [0]})
    assert emulation.adapt(small).hp.threads <= 6
    assert any("accelerator" in item for item in emulation.not_emulated)  # no Orin GPU on this host


def test_emulated_run_pins_cores_and_labels_records(tmp_path, isolated_env):
    write(Path(isolated_env["config"]) / "devices/one-core-board.yaml",
          "name: one-core-board\nkind: edge\nsource: test profile\ncpu: {arch: x86_64, cores: 1}\n"
          "memory: {gb: 1}\ndetect: {device_tree: [One Core Board]}\n")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "edgeprof", "run", "-m", "synth:tiny", "-q", "q4_0", "-p", "16", "-n", "8", "-r", "1",
             "--warmup", "0", "--idle-s", "0", "--device", "one-core-board", "--emulate", "-o", str(tmp_path)],
            capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "EMULATED" in result.stdout
        (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
        (record,) = [json.loads(line) for line in (run_dir / "records.jsonl").read_text().splitlines()]
        assert record["device"]["emulated"] is True and record["device"]["profile"] == "one-core-board"
        assert record["hyperparameters"]["threads"] == 1 and record["metrics"]["worker_cpus"] == 1
        emulation = record["device"]["emulation"]
        assert any("pinned to 1" in item for item in emulation["emulated"])
        assert "memory bandwidth" in emulation["not_emulated"]
    finally:
        (Path(isolated_env["config"]) / "devices/one-core-board.yaml").unlink()


def test_a_gpu_whose_sensors_answer_not_supported_still_runs_every_layer(tmp_path):
    """On a Jetson (and vGPU/MIG guests) NVML lists the GPU but answers NotSupported for power: that is a
    sensor question, not whether layers can go to the GPU. `--gpu-layers auto` must mean all of them."""
    from edgeprof.bench.execute import resolve_auto_gpu_layers
    from edgeprof.hardware.devices import offload_gpus
    from edgeprof.hardware.gpus import gpu_names as nvml_gpu_names
    from fake_sensors import FakeNvml

    names = nvml_gpu_names(load_module=lambda: FakeNvml(supported=False))
    assert names == ["Fake H100"]
    gpus = offload_gpus(root=tmp_path, gpu_names=names)
    assert resolve_auto_gpu_layers({"gpu_layers": ["auto"]}, bool(gpus))["gpu_layers"] == [-1]
    # a Jetson without NVML (L4T before JetPack 6): its integrated GPU, from the device tree
    write(tmp_path / "proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\x00")
    assert offload_gpus(root=tmp_path, gpu_names=[]) == ["NVIDIA Jetson Orin Nano Developer Kit (integrated GPU)"]
    assert offload_gpus(root=tmp_path / "nothing", gpu_names=[]) == []
