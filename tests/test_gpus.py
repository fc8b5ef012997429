"""GPU enumeration (hardware/gpus.py) apart from sampling: what NVML lists, with memory and compute capability
where the driver answers and None where it does not, and nothing at all without NVML."""

from __future__ import annotations

from types import SimpleNamespace

from edgeprof.hardware.gpus import Gpu, gpu_names, list_gpus, select_gpus


class FakeNvml:
    """Two GPUs; the second's driver answers neither memory nor compute capability (as a Jetson's does not)."""

    def __init__(self):
        self.shut = 0

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shut += 1

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return [b"NVIDIA H200", "Orin (nvgpu)"][handle]

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle}"

    def nvmlDeviceGetMemoryInfo(self, handle):
        if handle:
            raise RuntimeError("NotSupported")
        return SimpleNamespace(total=141 * 2**30, used=0)

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        if handle:
            raise RuntimeError("NotSupported")
        return (9, 0)


def test_gpus_carry_memory_and_compute_capability_where_the_driver_answers():
    fake = FakeNvml()
    gpus = list_gpus(load_module=lambda: fake)
    assert gpus == [Gpu(0, "GPU-0", "NVIDIA H200", 141 * 1024.0, (9, 0)), Gpu(1, "GPU-1", "Orin (nvgpu)")]
    assert fake.shut == 1  # NVML is shut down after the query
    assert select_gpus("1", gpus) == [gpus[1]] and select_gpus("", gpus) == [gpus[0]]


def test_no_nvml_means_no_gpu():
    def missing():
        raise ImportError("no pynvml")

    assert list_gpus(load_module=missing) == [] and gpu_names(load_module=missing) == []
