"""Run as if on a smaller device (`--device jetson-orin-nano-8gb --emulate` on a bigger host).

What can be emulated on another host: the CPU core count (affinity pinning and a thread cap), the
absence of the device's GPU (no offload when the host's GPU is not the device's), and whether the model
fits the device's memory (refused before anything runs, saying by how much). What cannot: memory
bandwidth, clocks, accelerator speed, power and heat. Every record says which is which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from edgeprof.config import Hyperparameters
from edgeprof.hardware.devices import DeviceProfile, HostFacts
from edgeprof.errors import ConfigError
from edgeprof.quant import GGUF_QUANTS, kv_bytes_per_element

if TYPE_CHECKING:  # a configuration is only read here; the plan that makes them imports this module's users
    from edgeprof.bench.plan import BenchConfig

RUNTIME_OVERHEAD_BYTES = 150e6  # llama.cpp's own allocations besides weights, KV and compute buffers (estimate)


@dataclass
class Emulation:
    profile: DeviceProfile
    cpu_affinity: list[int] | None
    max_threads: int | None
    gpu_offload: bool
    emulated: list[str] = field(default_factory=list)
    not_emulated: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"emulated": self.emulated, "not_emulated": self.not_emulated,
                "cpu_affinity": self.cpu_affinity, "max_threads": self.max_threads, "gpu_offload": self.gpu_offload}

    def adapt(self, config: BenchConfig) -> BenchConfig:
        """Cap threads and GPU layers to what the emulated device allows, then check the memory fit."""
        hp = config.hp
        if self.max_threads and hp.threads > self.max_threads:
            hp = replace(hp, threads=self.max_threads)
        if not self.gpu_offload and hp.gpu_layers:  # None (an ONNX Runtime configuration) stays None
            hp = replace(hp, gpu_layers=0)
        self.check_fit(config, hp)
        return replace(config, hp=hp)

    def check_fit(self, config: BenchConfig, hp: Hyperparameters) -> None:
        available = self.profile.memory_gb
        if not available:
            return
        need = memory_needed(config, hp)
        if need["total"] > available * 1e9:
            parts = ", ".join(f"{k} {v / 1e9:.2f}" for k, v in need.items() if k != "total")
            raise ConfigError(
                f"{config.source.name} {config.quant} (batch {hp.batch}, context {hp.context_per_sequence}"
                f"{f', depth {hp.depth}' if hp.depth else ''}) needs "
                f"{need['total'] / 1e9:.2f} GB ({parts}; working memory estimated) but {self.profile.name} has "
                f"{available:g} GB: {need['total'] / 1e9 - available:.2f} GB too much")


_ONNX_STORAGE = {"fp32": "f32", "fp16": "f16", "int8": "q8_0"}  # int4 (MatMulNBits, any block): about q4_0


def storage_equivalent(quant: str) -> str:
    """The GGUF storage closest to a quantization's bytes per weight: itself for GGUF names; for ONNX
    variants fp32 -> f32, fp16 -> f16, int8 -> q8_0, int4 -> q4_0 (4 bits plus a scale per block)."""
    if quant in GGUF_QUANTS:
        return quant
    if quant.startswith("int4"):
        return "q4_0"
    return _ONNX_STORAGE.get(quant, "f16")


def kv_cache_bytes(config: BenchConfig, hp: Hyperparameters, tokens: int | None = None) -> float | None:
    """K and V bytes of all `hp.batch` sequences holding `tokens` each (default: the whole context, as the
    cache is allocated; a context depth is part of it), or None where the model's shape is unknown
    (an ONNX file given as it is)."""
    tokens = hp.context_per_sequence if tokens is None else tokens
    arch = config.source.architecture
    if arch is None and config.source.is_gguf:
        facts = config.source.gguf_facts()
        return facts.kv_cache_bytes(tokens, kv_bytes_per_element(hp.kv_type or "f16"), hp.n_ubatch or 512) * hp.batch
    if arch is None:
        return None
    kv_type = hp.kv_type or ("f16" if config.quant == "fp16" else "f32")  # ONNX: the cache in the model's dtype
    # llama.cpp keeps a window-sized cache for sliding-window layers; optimum's ONNX graph concatenates all
    windowed = config.windowed_kv_cache
    cells = arch.swa_cache_cells(hp.n_ubatch or 512) if windowed else arch.max_position_embeddings
    return arch.kv_cache_bytes(tokens, kv_bytes_per_element(kv_type), cells) * hp.batch


def memory_needed(config: BenchConfig, hp: Hyperparameters) -> dict[str, float]:
    """Bytes for weights, KV cache (the whole context: depth + prompt + generated) and working memory
    (compute buffers + runtime, an estimate)."""
    arch = config.source.architecture
    if arch is None and config.source.is_gguf:  # a user's GGUF: its size is its weights, its metadata the KV
        return _gguf_memory(config, hp)
    if arch is None:
        weights = config.source.path.stat().st_size
        return {"weights": weights, "total": weights + RUNTIME_OVERHEAD_BYTES}
    quant = GGUF_QUANTS[storage_equivalent(config.quant)]
    weights = arch.gguf_weight_bytes(quant)
    kv = kv_cache_bytes(config, hp)
    tokens = min(hp.n_ubatch or 512, hp.batch * hp.prompt_tokens)
    working = 4 * tokens * (arch.vocab_size + 8 * arch.hidden_size) + RUNTIME_OVERHEAD_BYTES
    return {"weights": weights, "kv_cache": kv, "working": working, "total": weights + kv + working}


def _gguf_memory(config: BenchConfig, hp: Hyperparameters) -> dict[str, float]:
    """Weights (the file), KV cache from the GGUF's layers, KV heads, head sizes and window pattern (any
    family; an unmodelled family's windows are ignored, an upper bound), and working memory as for a preset."""
    facts = config.source.gguf_facts()
    weights = facts.file_bytes
    kv = kv_cache_bytes(config, hp)
    tokens = min(hp.n_ubatch or 512, hp.batch * hp.prompt_tokens)
    working = 4 * tokens * (facts.vocab + 8 * facts.hidden) + RUNTIME_OVERHEAD_BYTES
    return {"weights": weights, "kv_cache": kv, "working": working, "total": weights + kv + working}


def plan_emulation(profile: DeviceProfile, facts: HostFacts, host_gpu_names: list[str]) -> Emulation:
    """What this host can and cannot reproduce of `profile`."""
    emulated, not_emulated = [], ["memory bandwidth", "clocks", "power and thermal behaviour"]
    affinity, max_threads = None, None
    cores = profile.cpu_cores
    host_cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(facts.logical_cores))
    if cores and len(host_cpus) >= cores:
        affinity, max_threads = host_cpus[:cores], cores
        emulated.append(f"CPU cores: pinned to {cores} of the host's {len(host_cpus)}")
    elif cores:
        not_emulated.append(f"CPU cores: the host has {len(host_cpus)}, fewer than the device's {cores}")
    else:
        not_emulated.append("CPU cores: the profile does not say how many")
    names = (profile.data.get("detect") or {}).get("nvml_name", [])
    same_gpu = any(key in gpu for gpu in host_gpu_names for key in names)
    if profile.data.get("accelerator") and not same_gpu:
        not_emulated.append("accelerator: the host's GPU is not the device's; GPU offload is off")
    elif same_gpu:
        emulated.append("accelerator: the host has the device's GPU")
    if profile.memory_gb:
        emulated.append(f"memory: configurations that would not fit {profile.memory_gb:g} GB are refused")
    emulated.append("model storage: the same GGUF files and quantizations as on the device")
    return Emulation(profile, affinity, max_threads, gpu_offload=same_gpu, emulated=emulated,
                     not_emulated=not_emulated)
