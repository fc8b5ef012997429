"""`edgeprof fidelity MODEL…`: perplexity and KL of each artifact over a text, nothing timed.

Each configuration (model x quantization x backend) is exported as `run` would (cached), then its
fidelity job runs in a worker child, as after a measurement: the parent first, then the artifact, one
loaded at a time, the result cached by both hashes and the text's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgeprof.bench.plan import expand
from edgeprof.bench.runner import Notify, Runner, RunOptions, ignore_events
from edgeprof.errors import ConfigError
from edgeprof.fidelity import FidelitySettings
from edgeprof.results.rundir import create_run_dir

_USER_ERRORS = ("FidelityTextError: ", "ConfigError: ")  # how the worker names a text or setting the user gave


def measure_fidelity_of(models: list[str], quants: list[str], backends: list[str], settings: FidelitySettings,
                        threads: int = 0, gpu_layers: int = 0, provider: str = "cpu", timeout_s: float = 3600.0,
                        notify: Notify = ignore_events, calibration_text: str | None = None) -> list[dict]:
    """One row per configuration: model, backend, quant and its fidelity_* figures (or fidelity_status and
    fidelity_error). A text the models cannot score is a `ConfigError` (one line, exit code 2)."""
    settings.validate()
    grid = {"prompt_tokens": [settings.ctx], "gen_tokens": [1], "context": [settings.ctx + 1], "threads": [threads],
            "gpu_layers": [gpu_layers], "provider": [provider]}
    configs = expand(models, quants, backends, grid, allow_long_context=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeprof-fidelity-") as scratch:
        runner = Runner(create_run_dir(Path(scratch)), {}, RunOptions(timeout_s=timeout_s, fidelity_settings=settings,
                                                                    calibration_text=calibration_text),
                        notify)
        for config in configs:
            artifact, metrics = runner.fidelity_only(config)
            error = metrics.get("fidelity_error") or ""
            for prefix in _USER_ERRORS:
                if error.startswith(prefix):
                    raise ConfigError(error[len(prefix):])
            rows.append({"model": config.source.name, "backend": config.backend,
                         "quant": artifact.quant if artifact else config.quant, **metrics})
    return rows
