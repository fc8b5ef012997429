"""The settings only ONNX Runtime reads (imports nothing heavy)."""

from __future__ import annotations

from dataclasses import dataclass

from edgeprof.config import BackendOptions
from edgeprof.errors import ConfigError

GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class OnnxRuntimeOptions(BackendOptions):
    """ONNX Runtime's session settings for one configuration."""

    provider: str = "cpu"  # execution provider by short name (cpu, cuda, tensorrt, coreml, ...)
    graph_opt: str = "all"  # graph optimization level

    def validate(self) -> "OnnxRuntimeOptions":
        if self.graph_opt not in GRAPH_OPT_LEVELS:
            raise ConfigError(f"graph optimization must be one of {', '.join(GRAPH_OPT_LEVELS)}, got {self.graph_opt!r}")
        return self
