"""NVIDIA GPUs as devices, through NVML (nvidia-ml-py): which GPUs this host has (index, UUID, name, memory,
compute capability), which of them a run uses, and the GPU memory NVML attributes to a process.

This is vendor device access, apart from sampling (Zeus keeps `device/gpu/` apart from its monitors the
same way): hardware detection, the run's GPU choice, the worker and a fleet device's description ask
here; `sensors/nvml.py` samples power, energy and temperature of the GPUs chosen here.

Whether a GPU exists is not whether its sensors answer: on a Jetson (and on vGPU and MIG guests) NVML
lists the GPU but answers NotSupported for power, and that GPU still runs every layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from edgeprof.errors import ConfigError


def load_pynvml():
    """nvidia-ml-py, imported only when a GPU question is asked (ImportError where it is not installed)."""
    import pynvml

    return pynvml


def nvml_text(value) -> str:
    """An NVML string (bytes in older nvidia-ml-py releases) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU: NVML's index (PCI bus order, as nvidia-smi lists them), UUID and name; its total
    memory in MiB and CUDA compute capability (major, minor) where the driver answers (None where not)."""

    index: int
    uuid: str
    name: str
    memory_mb: float | None = None
    compute_capability: tuple[int, int] | None = None


@contextlib.contextmanager
def nvml_session(load_module: Callable = load_pynvml) -> Iterator:
    """NVML initialised for one query (None where it is absent), shut down afterwards."""
    try:
        nvml = load_module()
        nvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no nvidia-ml-py, no driver, no library
        yield None
        return
    try:
        yield nvml
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def gpu_uuid(nvml, handle) -> str:
    """A GPU's UUID, or "" from a driver that will not say (such a GPU can only be chosen by index)."""
    try:
        return nvml_text(nvml.nvmlDeviceGetUUID(handle))
    except Exception:  # noqa: BLE001
        return ""


def _memory_mb(nvml, handle) -> float | None:
    try:
        return nvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20
    except Exception:  # noqa: BLE001 - NotSupported (a Jetson's shared memory), or an old binding
        return None


def _compute_capability(nvml, handle) -> tuple[int, int] | None:
    try:
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        return int(major), int(minor)
    except Exception:  # noqa: BLE001 - a binding or driver without it
        return None


def list_gpus(load_module: Callable = load_pynvml) -> list[Gpu]:
    """The GPUs NVML lists ([] where there is no NVML), whatever their sensors answer."""
    with nvml_session(load_module) as nvml:
        if nvml is None:
            return []
        try:
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
            return [Gpu(index, gpu_uuid(nvml, handle), nvml_text(nvml.nvmlDeviceGetName(handle)),
                        _memory_mb(nvml, handle), _compute_capability(nvml, handle))
                    for index, handle in enumerate(handles)]
        except Exception:  # noqa: BLE001
            return []


def gpu_names(load_module: Callable = load_pynvml) -> list[str]:
    """Names of the NVIDIA GPUs NVML lists here ([] where NVML is absent or does not initialise)."""
    return [gpu.name for gpu in list_gpus(load_module)]


def select_gpus(spec: str, gpus: list[Gpu], cuda_visible: str | None = None) -> list[Gpu]:
    """The GPUs a run uses. `spec` is "" (one GPU: the first that CUDA_VISIBLE_DEVICES names, else NVML's
    first), "all" (every visible GPU), or NVML indices / UUIDs, comma-separated. The run then pins its
    workers to them by UUID, so CUDA's own device order (fastest first by default) cannot swap them."""

    def lookup(token: str) -> Gpu:
        token = token.strip()
        for gpu in gpus:
            if token == gpu.uuid or (token.isdigit() and int(token) == gpu.index):
                return gpu
        known = ", ".join(f"{g.index} ({g.uuid})" for g in gpus) or "none"
        raise ConfigError(f"no GPU {token!r} here (NVML lists: {known})")

    visible = gpus
    if cuda_visible is not None and cuda_visible.strip():
        visible = [lookup(token) for token in cuda_visible.split(",") if token.strip() and token.strip() != "-1"]
    if spec in ("", None):
        return visible[:1]
    if spec == "all":
        return visible
    chosen = [lookup(token) for token in spec.split(",") if token.strip()]
    outside = [g for g in chosen if g not in visible]
    if outside:
        raise ConfigError(f"GPU {outside[0].index} is outside CUDA_VISIBLE_DEVICES={cuda_visible}")
    return chosen


def process_gpu_memory_mb(pid: int, load_module: Callable = load_pynvml) -> float | None:
    """GPU memory (MB) that NVML attributes to process `pid` on all GPUs, or None where NVML cannot say
    (no NVIDIA driver, a Jetson, or a PID namespace that hides the process from the driver)."""
    with nvml_session(load_module) as nvml:
        if nvml is None:
            return None
        try:
            total, seen = 0, False
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                for process in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if process.pid == pid and process.usedGpuMemory is not None:
                        total += process.usedGpuMemory
                        seen = True
            return total / 2**20 if seen else None
        except Exception:  # noqa: BLE001 - NotSupported (Jetson) or a driver without per-process accounting
            return None
