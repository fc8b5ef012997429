"""The settings only llama.cpp reads, with llama-bench's defaults (imports nothing heavy)."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprof.config import BackendOptions
from edgeprof.errors import ConfigError
from edgeprof.quant.gguf import KV_CACHE_TYPES

FLASH_ATTN = ("auto", "on", "off")


@dataclass(frozen=True)
class LlamaCppOptions(BackendOptions):
    """llama.cpp's context settings for one configuration. Sizes are in tokens."""

    kv_type: str = "f16"  # K and V cache element type (`quant.KV_CACHE_TYPES`); a workload setting (see config)
    gpu_layers: int = 0  # layers offloaded to the GPU; -1 = all
    n_batch: int = 2048  # logical batch: tokens per llama_decode call in prefill
    n_ubatch: int = 512  # physical micro-batch
    flash_attn: str = "auto"

    def validate(self) -> "LlamaCppOptions":
        for name in ("n_batch", "n_ubatch"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be > 0, got {getattr(self, name)}")
        if self.gpu_layers < -1:
            raise ConfigError(f"gpu layers must be -1 (all) or >= 0, got {self.gpu_layers}")
        if self.kv_type not in KV_CACHE_TYPES:
            raise ConfigError(f"unknown KV-cache type {self.kv_type!r} (offered: {', '.join(KV_CACHE_TYPES)})")
        if self.flash_attn not in FLASH_ATTN:
            raise ConfigError(f"flash attention must be one of {', '.join(FLASH_ATTN)}, got {self.flash_attn!r}")
        return self
