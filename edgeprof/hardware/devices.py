"""Device profiles (top-level `devices/` YAML) and detection of the host we run on.

A profile says what a device is; `HostFacts` says what this machine measurably has. Records carry both,
so a figure is always tied to the hardware that made it.
"""

from __future__ import annotations

import difflib
import json
import os
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from edgeprof.catalog import load_entries, user_config_root
from edgeprof.errors import CatalogError
from edgeprof.hardware import gpus
from edgeprof.hardware.board import device_tree_model


@dataclass(frozen=True)
class HostFacts:
    """What this machine has, read at run time."""

    hostname: str
    machine: str
    cpu_model: str
    physical_cores: int
    logical_cores: int
    memory_gb: float
    os: str

    def to_dict(self) -> dict:
        return asdict(self)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def host_facts() -> HostFacts:
    logical = os.cpu_count() or 1
    return HostFacts(
        hostname=platform.node(),
        machine=platform.machine(),
        cpu_model=_cpu_model(),
        physical_cores=psutil.cpu_count(logical=False) or logical,
        logical_cores=logical,
        memory_gb=round(psutil.virtual_memory().total / 2**30, 2),
        os=f"{platform.system()} {platform.release()}",
    )


KINDS = ("edge", "laptop", "desktop", "server")
KNOWN_SENSORS = ("nvml", "rapl", "thermal", "hwmon", "battery", "ina3221", "tegrastats", "process", "vcgencmd")
TFLOPS_DTYPES = ("fp32", "fp16", "bf16", "int8")
# What a device's kernels are like, for the achievable-rate models fitted per class
# (`analysis.device_classes`): the class of a profile's accelerator (or of its CPU where it has none) is
# `class`, its CPU side's `cpu.class` (derived from `cpu.arch` where a classed profile leaves it out).
DEVICE_CLASSES = ("arm-cpu", "apple-cpu", "x86-cpu", "jetson-gpu", "nvidia-gpu", "apple-gpu", "amd-gpu", "other-gpu")
_ARCH_CLASSES = {"aarch64": "arm-cpu", "arm64": "arm-cpu", "x86_64": "x86-cpu"}
# `isa`: the instruction sets llama.cpp's kernels dispatch on, so the fit can group devices by kernel path:
# `isa.cpu` lists CPU features (ggml's NEON dot-product / i8mm and AVX2 / AVX-VNNI / AVX-512 kernels),
# `isa.gpu` names the GPU's target (CUDA `sm_XY` from its compute capability, AMD `gfxNNNN`, Metal `appleN`).
CPU_ISA_FEATURES = ("neon", "dotprod", "i8mm", "sve", "sve2", "avx2", "avx_vnni", "avx512", "avx512_vnni")
_GPU_ISA = re.compile(r"^(sm_\d{2,3}|gfx[0-9a-f]{3,4}|apple\d+)$")


@dataclass(frozen=True)
class DeviceProfile:
    """A validated device profile. Figures are datasheet values unless the YAML marks them `estimates`.

    `data` is the YAML mapping (with a selected mode already merged in), so later modules can read
    fields this class does not name.
    """

    name: str
    display_name: str
    kind: str
    data: dict

    @property
    def memory_gb(self) -> float | None:
        """Memory a model must fit in: the accelerator's own, or the shared system memory."""
        accel = self.data.get("accelerator") or {}
        if accel.get("memory_gb") and not accel.get("shares_host_memory"):
            return float(accel["memory_gb"])
        return float((self.data.get("memory") or {}).get("gb") or 0) or None

    @property
    def cpu_cores(self) -> int | None:
        return (self.data.get("cpu") or {}).get("cores")

    @property
    def has_discrete_gpu(self) -> bool:
        accel = self.data.get("accelerator") or {}
        return bool(accel) and not accel.get("shares_host_memory")

    def device_class(self, on_gpu: bool) -> str | None:
        """The class whose achievable-rate factors apply to this device's GPU (`on_gpu`) or CPU; None where
        the profile names no class (predictions then use datasheet ceilings and say so)."""
        declared = self.data.get("class")
        if on_gpu:
            return declared if self.data.get("accelerator") else None
        cpu = self.data.get("cpu") or {}
        if cpu.get("class"):
            return cpu["class"]
        if not self.data.get("accelerator"):
            return declared
        return _ARCH_CLASSES.get(cpu.get("arch", "")) if declared else None

    @property
    def is_generic(self) -> bool:
        return "machine" in (self.data.get("detect") or {})


def _fail(path: Path | str, message: str) -> CatalogError:
    return CatalogError(f"{path}: {message}")


def _number(path, data: dict, key: str, field: str, required: bool = False, integer: bool = False) -> None:
    value = data.get(key)
    if value is None:
        if required:
            raise _fail(path, f"field '{field}' is required")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (
            integer and not isinstance(value, int)):
        kind = "a whole number" if integer else "a number"
        raise _fail(path, f"field '{field}' must be {kind} > 0, got {value!r}")


def _mapping(path, data: dict, key: str, field: str) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, f"field '{field}' must be a mapping, got {type(value).__name__}")
    return value


def validate_profile(data: dict, path: Path | str) -> None:
    """Raise a `CatalogError` naming the file and the field for anything malformed."""
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise _fail(path, "field 'name' is required")
    if data.get("kind") not in KINDS:
        raise _fail(path, f"field 'kind' must be one of {', '.join(KINDS)}, got {data.get('kind')!r}")
    if not isinstance(data.get("source"), str) or not data["source"].strip():
        raise _fail(path, "field 'source' is required: where the figures come from (datasheet URL), "
                          "or 'detected at run time'")
    _check_figures(data, path, "")
    for field, value in (("class", data.get("class")), ("cpu.class", (data.get("cpu") or {}).get("class"))):
        if value is not None and value not in DEVICE_CLASSES:
            raise _fail(path, f"field '{field}' must be one of {', '.join(DEVICE_CLASSES)}, got {value!r}")
    _check_isa(data, path)
    aliases = data.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise _fail(path, "field 'aliases' must be a list of names (other names the device is published under)")
    for sensor in data.get("sensors") or []:
        if sensor not in KNOWN_SENSORS:
            raise _fail(path, f"field 'sensors' names unknown sensor {sensor!r} (known: {', '.join(KNOWN_SENSORS)})")
    detect = _mapping(path, data, "detect", "detect")
    for key in detect:
        if key not in ("device_tree", "nvml_name", "machine", "memory_gb"):
            raise _fail(path, f"field 'detect.{key}' is not a detection rule (device_tree, nvml_name, machine, memory_gb)")
    for mode, overlay in _mapping(path, data, "modes", "modes").items():
        if not isinstance(overlay, dict):
            raise _fail(path, f"field 'modes.{mode}' must be a mapping")
        _check_figures(overlay, path, f"modes.{mode}.")


def _check_isa(data: dict, path) -> None:
    isa = _mapping(path, data, "isa", "isa")
    if not isa:
        return
    features = isa.get("cpu", [])
    if not isinstance(features, list) or any(f not in CPU_ISA_FEATURES for f in features):
        raise _fail(path, f"field 'isa.cpu' must list features among {', '.join(CPU_ISA_FEATURES)}, got {features!r}")
    if "gpu" in isa and not (isinstance(isa["gpu"], str) and _GPU_ISA.match(isa["gpu"])):
        raise _fail(path, f"field 'isa.gpu' must be a CUDA sm_XY, an AMD gfxNNNN or a Metal appleN, got {isa['gpu']!r}")
    if not isinstance(isa.get("source"), str) or not isa["source"].strip():
        raise _fail(path, "field 'isa.source' is required: where the instruction sets are stated")


def _check_figures(data: dict, path, prefix: str) -> None:
    cpu = _mapping(path, data, "cpu", prefix + "cpu")
    _number(path, cpu, "cores", prefix + "cpu.cores", integer=True)
    _number(path, cpu, "max_ghz", prefix + "cpu.max_ghz")
    memory = _mapping(path, data, "memory", prefix + "memory")
    _number(path, memory, "gb", prefix + "memory.gb")
    _number(path, memory, "bandwidth_gbps", prefix + "memory.bandwidth_gbps")
    accel = _mapping(path, data, "accelerator", prefix + "accelerator")
    _number(path, accel, "memory_gb", prefix + "accelerator.memory_gb")
    _number(path, accel, "bandwidth_gbps", prefix + "accelerator.bandwidth_gbps")
    for dtype, value in _mapping(path, accel, "tflops", prefix + "accelerator.tflops").items():
        if dtype not in TFLOPS_DTYPES:
            raise _fail(path, f"field '{prefix}accelerator.tflops.{dtype}' is not a dtype ({', '.join(TFLOPS_DTYPES)})")
        _number(path, {dtype: value}, dtype, f"{prefix}accelerator.tflops.{dtype}")
    _number(path, _mapping(path, data, "power", prefix + "power"), "tdp_w", prefix + "power.tdp_w")


def _merge(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def list_profiles() -> list[DeviceProfile]:
    return [_profile(name, data, path) for name, (data, path) in sorted(load_entries("devices").items())]


def _profile(name: str, data: dict, path: Path) -> DeviceProfile:
    validate_profile(data, path)
    return DeviceProfile(name, str(data.get("display_name", name)), str(data["kind"]), data)


def get_profile(spec: str) -> DeviceProfile:
    """A profile by name, optionally with a power mode: `jetson-orin-nano-8gb:super`."""
    name, _, mode = spec.partition(":")
    entries = load_entries("devices")
    if name not in entries:
        name = _aliases(entries).get(name, name)
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else f" (known: {', '.join(sorted(entries))})"
        raise CatalogError(f"unknown device profile {name!r}{hint}")
    data, path = entries[name]
    profile = _profile(name, data, path)
    if not mode:
        return profile
    modes = data.get("modes") or {}
    if mode not in modes:
        raise CatalogError(f"device {name} has no mode {mode!r} (modes: {', '.join(modes) or 'none'})")
    merged = _merge({k: v for k, v in data.items() if k != "modes"}, modes[mode])
    return DeviceProfile(f"{name}:{mode}", f"{profile.display_name} ({mode})", profile.kind, merged)


def _aliases(entries: dict) -> dict[str, str]:
    """Other names profiles answer to (`aliases`: how a published benchmark names the device) -> profile name."""
    return {alias: name for name, (data, _) in entries.items() for alias in data.get("aliases") or []
            if isinstance(alias, str)}


def detect_profile(facts: HostFacts | None = None, root: str | Path = "/",
                   gpu_names: list[str] | None = None) -> DeviceProfile:
    """This host's profile: a Jetson or Raspberry Pi by device-tree model, an NVIDIA GPU by NVML name,
    otherwise the generic CPU profile of this architecture."""
    facts = facts or host_facts()
    profiles = list_profiles()
    model = device_tree_model(root)
    if model:
        for profile in profiles:
            rules = profile.data.get("detect") or {}
            if any(key in model for key in rules.get("device_tree", [])) and _memory_matches(rules, facts):
                return profile
    if gpu_names is None:
        gpu_names = gpus.gpu_names()
    for gpu in gpu_names:
        # the longest matching name wins: "RTX 4070 Ti SUPER" is not the "RTX 4070"
        matches = [(len(key), profile.name, profile) for profile in profiles
                   for key in (profile.data.get("detect") or {}).get("nvml_name", []) if key in gpu]
        if matches:
            return max(matches, key=lambda match: match[:2])[2]
    for profile in profiles:
        if facts.machine in (profile.data.get("detect") or {}).get("machine", []):
            return profile
    raise CatalogError(f"no device profile matches this host ({facts.machine}); add one under devices/")


def offload_gpus(root: str | Path = "/", gpu_names: list[str] | None = None) -> list[str]:
    """GPUs that can run llama.cpp layers here: those NVML lists (whatever their sensors answer), else a
    Jetson's integrated GPU, known from the device tree where NVML is missing (L4T before JetPack 6)."""
    if gpu_names is None:
        gpu_names = gpus.gpu_names()
    if gpu_names:
        return gpu_names
    model = device_tree_model(root)
    return [f"{model} (integrated GPU)"] if model and "jetson" in model.lower() else []


def resolve_device(spec: str, facts: HostFacts | None = None, emulate: bool = False, root: str | Path = "/",
                   gpu_names: list[str] | None = None) -> DeviceProfile:
    """The profile `--device` names ("" = detected; "jetson" = the detected Jetson model).

    Naming a specific device that this host is not is an error unless `emulate` is set.
    """
    facts = facts or host_facts()
    detected = detect_profile(facts, root, gpu_names)
    if not spec:
        return detected
    if spec == "jetson":
        if detected.name.startswith("jetson-"):
            return detected
        raise CatalogError(f"--device jetson: this host is not a Jetson (detected {detected.name}); to emulate one "
                           "here, name it and add --emulate, e.g. --device jetson-orin-nano-8gb --emulate")
    profile = get_profile(spec)
    if not emulate and not profile.is_generic and profile.name.split(":")[0] != detected.name:
        raise CatalogError(f"this host is {detected.name}, not {profile.name}; add --emulate to emulate "
                           f"{profile.name} here, or leave out --device")
    return profile


def _memory_matches(rules: dict, facts: HostFacts) -> bool:
    bounds = rules.get("memory_gb")
    return not bounds or bounds[0] <= facts.memory_gb <= bounds[1]


def calibration_path(profile_name: str) -> Path:
    """Where `edgeprof calibrate` stores a profile's measured ceilings and llama.cpp fits."""
    return user_config_root() / "calibration" / f"{profile_name}.json"


def load_calibration(profile_name: str) -> dict | None:
    """A profile's stored calibration, or None where this host has none."""
    try:
        return json.loads(calibration_path(profile_name).read_text())
    except (OSError, ValueError):
        return None
