"""Roofline ceilings for a device: a llama.cpp fit where calibrated, else its class's achievable-rate factors on
its datasheet (`analysis.device_classes`), else the bare datasheet (or calibrated triad/BLAS) roofs."""

from __future__ import annotations

from edgeprof.analysis.device_classes import CUDA_CLASSES, ClassFactors, class_ceilings, datasheet_roofs, \
    kernel_groups, load_class_factors
from edgeprof.analysis.fit import fitted_ceilings, legacy_cpu_fit
from edgeprof.analysis.roofline import Ceilings
from edgeprof.hardware.devices import DeviceProfile
from edgeprof.errors import CatalogError
from edgeprof.quant import GgufQuant

# Per-kernel overhead: on a GPU, launch and synchronisation per graph node (about 4 us on the H100 for
# llama.cpp's CUDA-graph decode, fitted from the committed H100 run); on a CPU, the threads' barrier.
DEFAULT_KERNEL_OVERHEAD_S = {"gpu": 4e-6, "cpu": 2e-6}
CEILING_MODES = ("auto", "datasheet")


def _matmul_dtype(quant: GgufQuant) -> str:
    return {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}.get(quant.name, "int8")


def device_ceilings(profile: DeviceProfile, quant: GgufQuant, on_gpu: bool, calibration: dict | None = None,
                    mode: str = "auto", class_factors: dict[str, ClassFactors] | None = None) -> Ceilings:
    """FLOP/s, B/s and per-kernel overhead for running `quant` weights on `profile` (GPU or CPU).

    `mode` "auto": this host's `edgeprof calibrate` llama.cpp fit where it has one, else the device class's
    factors on the datasheet (`class_factors`, default the committed ones), else the datasheet with a `note`
    saying why. "datasheet": the calibrated or datasheet peaks alone, as before class factors existed.
    The returned `Ceilings.source` names what was used."""
    data = profile.data
    accel, memory, cpu = data.get("accelerator") or {}, data.get("memory") or {}, data.get("cpu") or {}
    calibration = calibration or {}
    kind = "gpu" if on_gpu else "cpu"
    overhead = float(data.get(f"{kind}_kernel_overhead_us", DEFAULT_KERNEL_OVERHEAD_S[kind] * 1e6)) * 1e-6
    if on_gpu:
        if not accel:
            raise CatalogError(f"{profile.name} has no accelerator; predict with --cpu")
        tflops = accel.get("tflops") or {}
        dtype = _matmul_dtype(quant)
        peak = tflops.get(dtype) or tflops.get("fp16") or tflops.get("fp32")
        bandwidth = accel.get("bandwidth_gbps") or memory.get("bandwidth_gbps")
        source = "datasheet"
        if calibration.get("gpu_bandwidth_gbps"):
            bandwidth = calibration["gpu_bandwidth_gbps"]
            peak = (calibration.get("gpu_tflops") or {}).get("bf16", peak)
            source = "calibrated"
    else:
        peak = cpu.get("tflops_fp32")
        bandwidth = memory.get("bandwidth_gbps")
        source = "datasheet"
        if calibration.get("memory_bandwidth_gbps"):
            peak, bandwidth, source = calibration["cpu_tflops_fp32"], calibration["memory_bandwidth_gbps"], "calibrated"
    if not peak or not bandwidth:
        raise CatalogError(f"{profile.name} has no {'GPU' if on_gpu else 'CPU'} compute or bandwidth figures; run "
                           f"`edgeprof calibrate` on it, or add them to its YAML")
    base = Ceilings(float(peak) * 1e12, float(bandwidth) * 1e9, overhead, source)
    if mode == "datasheet":
        return base
    fit = (calibration.get(f"llama_cpp_{kind}") or {}).get(quant.name)
    if isinstance(fit, dict):
        if "decode" not in fit:
            fit = legacy_cpu_fit(fit)
        return fitted_ceilings(fit, base, "calibrated with llama.cpp")
    device_class = profile.device_class(on_gpu)
    if device_class is None:
        return _with_note(base, f"{profile.name} names no device class ('class' in its YAML): datasheet roofs, "
                                "which llama.cpp's kernels do not reach")
    factors = (load_class_factors() if class_factors is None else class_factors).get(device_class)
    roofs = datasheet_roofs(profile, quant, on_gpu) if source == "datasheet" else None
    ceilings = class_ceilings(factors, roofs, quant, device_class in CUDA_CLASSES, overhead,
                              kernel_groups(profile, on_gpu)) if factors and roofs else None
    if ceilings is None:
        return _with_note(base, f"no fitted factors for class {device_class}: datasheet roofs")
    return ceilings


def _with_note(base: Ceilings, note: str) -> Ceilings:
    return Ceilings(base.flops_per_s, base.bytes_per_s, base.kernel_overhead_s, base.source, note=note)
