"""`OpProfile`: what `--profile-ops` measured on any backend, one typed shape.

Every backend's profiler returns one: per phase (prefill, a mean decode step) milliseconds and shares by
operator category (`op_categories.OP_CATEGORIES`), the sum of those (`node_ms`) and the call they are set
against (`run_ms`). What only one method measures (llama.cpp's coverage and dilation, its per-window
overhead, CUPTI's kernels) rides in `extra` / `details`, so records keep every figure without a field per
backend. Records store `to_dict()` as the metric `op_profile`; `from_dict` reads it back, records made
before the profile was typed included (ONNX Runtime's then had no `backend` or `method`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ORT_METHOD = "ONNX Runtime profiler"  # what older ONNX Runtime records' profiles did not say
_PHASE_KEYS = ("ms", "share", "node_ms", "run_ms")
_PROFILE_KEYS = ("backend", "method", "prefill", "decode", "decode_steps_profiled", "decode_by_layer")


@dataclass(frozen=True)
class PhaseOps:
    """One phase's operator time. `ms` per category for one call (prefill) or one mean decode step."""

    ms: dict[str, float]
    share: dict[str, float]  # ms / node_ms per category (0 where nothing was timed)
    node_ms: float  # the sum of the category times
    run_ms: float  # the call they are set against (ORT: the profiled call; llama.cpp: the plain step)
    extra: dict = field(default_factory=dict)  # a method's own figures: coverage, dilation, outside_ms, ...

    @property
    def coverage(self) -> float | None:
        """The reconstructed step over the plain one, where the method measures it (llama.cpp)."""
        return self.extra.get("coverage")

    @property
    def dilation(self) -> float | None:
        """The observed step over the plain one, where the method measures it (llama.cpp)."""
        return self.extra.get("dilation")

    def to_dict(self) -> dict:
        return {"ms": self.ms, "share": self.share, "node_ms": self.node_ms, "run_ms": self.run_ms, **self.extra}

    @classmethod
    def from_dict(cls, data: dict) -> "PhaseOps":
        return cls(data.get("ms", {}), data.get("share", {}), data.get("node_ms", 0.0), data.get("run_ms", 0.0),
                   {k: v for k, v in data.items() if k not in _PHASE_KEYS})


@dataclass(frozen=True)
class OpProfile:
    """A backend's operator profile of one configuration."""

    backend: str
    method: str  # how the times were taken, in words
    prefill: PhaseOps
    decode: PhaseOps
    decode_steps_profiled: int
    decode_by_layer: dict[str, dict[str, float]] = field(default_factory=dict)  # layer -> category -> ms
    details: dict = field(default_factory=dict)  # the method's own facts (nodes, overhead, kernels, ...)

    def to_dict(self) -> dict:
        data = {"backend": self.backend, "method": self.method, "prefill": self.prefill.to_dict(),
                "decode": self.decode.to_dict(), "decode_steps_profiled": self.decode_steps_profiled, **self.details}
        if self.decode_by_layer:
            data["decode_by_layer"] = self.decode_by_layer
        return data

    @classmethod
    def from_dict(cls, data: dict, backend: str = "onnxruntime") -> "OpProfile":
        """A record's `op_profile`; `backend` names it where the record's profile does not (older ORT ones)."""
        return cls(data.get("backend", backend), data.get("method", ORT_METHOD),
                   PhaseOps.from_dict(data.get("prefill") or {}), PhaseOps.from_dict(data.get("decode") or {}),
                   int(data.get("decode_steps_profiled", 0)), data.get("decode_by_layer") or {},
                   {k: v for k, v in data.items() if k not in _PROFILE_KEYS})
