"""Errors a user can cause. The CLI prints their message as one line and exits with code 2.

Each message says what was wrong and, where it can, what to do instead.
"""


class EdgeprofError(Exception):
    """Base of every error that is the user's input, not a bug in edgeprof."""


class CatalogError(EdgeprofError):
    """An unknown or malformed model preset or device profile."""


class ModelSpecError(EdgeprofError):
    """A model spec that names nothing usable (missing path, unknown synth preset, bad folder)."""


class PredictionUnavailable(ModelSpecError):
    """The roofline cannot predict this model: "prediction unavailable: <reason> (<detail>)". `reason` is the
    short form tables show (a family, a quantization)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"prediction unavailable: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason


class ArtifactError(EdgeprofError):
    """A model file that is not what it claims to be (not GGUF, truncated, unsupported layout)."""


class QuantError(EdgeprofError):
    """A quantization type that the chosen format or backend does not offer."""


class ConfigError(EdgeprofError):
    """Hyperparameters that cannot run (batch <= 0, prompt + generated > context, ...)."""


class OutputError(EdgeprofError):
    """An output directory that cannot be created or written."""


class BackendUnavailableError(EdgeprofError):
    """A backend or a backend feature (e.g. GPU offload) that this installation lacks."""
