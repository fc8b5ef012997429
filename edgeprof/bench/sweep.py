"""A sweep: what to run (models x quants x backends x hyperparameters) and how, as one serialisable spec.

`edgeprof run` builds a spec from its options, `edgeprof sweep FILE.yaml` from a file; both store it in
the run's manifest, so `--resume RUN_DIR` can rebuild exactly the same configurations and skip those
already finished. A configuration counts as finished when all its repetitions are recorded or it ended
in a terminal status (failed, oom, timeout, skipped); the partial records of one interrupted mid-way are
dropped before it runs again, so a resumed run holds the same records as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from edgeprof.backends.registry import option_names
from edgeprof.errors import ConfigError
from edgeprof.results.records import read_records
from edgeprof.results.rundir import read_manifest

TERMINAL = ("failed", "oom", "timeout", "skipped")
# Friendly YAML names for Hyperparameters fields.
_HP_ALIASES = {"prompt": "prompt_tokens", "gen": "gen_tokens", "ngl": "gpu_layers"}


@dataclass
class SweepSpec:
    """Everything needed to expand and run a sweep; stored verbatim in manifest.json."""

    models: list[str]
    quants: list[str] = field(default_factory=lambda: ["q4_k_m"])
    backends: list[str] = field(default_factory=lambda: ["llama.cpp"])
    grid: dict[str, list] = field(default_factory=dict)  # Hyperparameters field -> values
    repetitions: int = 3
    warmup: int = 1
    timeout_s: float = 900.0
    device: str = ""
    emulate: bool = False
    fidelity: bool = True
    fidelity_text: str | None = None  # the text perplexity and KL are measured over (None: edgeprof's default)
    fidelity_ctx: int = 512  # tokens per chunk (llama-perplexity's -c)
    fidelity_chunks: int = 10  # chunks scored; 0 = every whole chunk of the text
    calibration_text: str | None = None  # what IQ / -imat / int4-gptq quantizations calibrate on (None: the default)
    profile_ops: bool = False
    sample_hz: float = 10.0
    idle_s: float = 3.0
    energy_window_s: float = 2.0  # shortest steady energy window per repetition (0: timed phases only)
    allow_long_context: bool = False  # run prompt + generated tokens past the model's trained context
    gpus: str = ""  # NVML indices or UUIDs the run uses; "" = one GPU, "all" = every visible one
    sustain_s: float = 0.0  # per configuration, generate back to back this long after the repetitions
    sustain_window_s: float = 10.0  # shortest window of the sustained time series
    sustain_until_steady: bool = False  # end a sustained run once throughput and temperature settle
    jetson_clocks: bool = False  # with power modes: pin clocks at each mode's maximum (jetson_clocks)
    name: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SweepSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown sweep setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**data)


def load_sweep_file(path: Path) -> SweepSpec:
    """A sweep YAML: models, quants, backends, hyperparameters (lists), and run settings."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the sweep file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or "models" not in data:
        raise ConfigError(f"{path}: a sweep file needs at least `models:` (a list of model specs)")
    grid: dict[str, list] = {}
    for key, values in (data.pop("hyperparameters", None) or {}).items():
        name = _HP_ALIASES.get(key, key)
        known = option_names()  # the shared fields and every registered backend's own settings
        if name not in known:
            raise ConfigError(f"{path}: unknown hyperparameter {key!r} (known: {', '.join(sorted(known))})")
        grid[name] = values if isinstance(values, list) else [values]
    for key in ("models", "quants", "backends"):
        if key in data and not isinstance(data[key], list):
            data[key] = [data[key]]
    if "sustain" in data:  # `sustain: 10m` (a duration) as on the command line
        from edgeprof.bench.sustain import parse_duration_s

        try:
            data["sustain_s"] = parse_duration_s(data.pop("sustain"))
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    data.setdefault("name", path.stem)
    try:
        return SweepSpec.from_dict({**data, "grid": grid})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def finished_run_keys(records: list[dict], repetitions: int) -> set[str]:
    """Run keys whose configuration is complete: every repetition recorded, or a terminal status."""
    done: dict[str, int] = {}
    terminal: set[str] = set()
    for record in records:
        if record["status"] == "ok":
            done[record["run_key"]] = done.get(record["run_key"], 0) + 1
        elif record["status"] in TERMINAL:
            terminal.add(record["run_key"])
    return terminal | {key for key, count in done.items() if count >= repetitions}


def prune_unfinished(records_path: Path, repetitions: int) -> tuple[set[str], int]:
    """Drop the records of configurations interrupted mid-way (rewritten atomically); return the finished
    run keys and how many records were dropped."""
    records = read_records(records_path)
    finished = finished_run_keys(records, repetitions)
    kept = [r for r in records if r["run_key"] in finished]
    if len(kept) != len(records) or records_path.exists():
        tmp = records_path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as f:
            for record in kept:
                f.write(json.dumps(record, sort_keys=True, allow_nan=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(records_path)
    return finished, len(records) - len(kept)


def resumed_spec(run_dir: Path) -> SweepSpec:
    """The sweep a run directory was made from, to continue it (`sweep --resume`); one line where it cannot be."""
    manifest = read_manifest(run_dir)
    if "sweep" not in manifest:
        raise ConfigError(f"{run_dir}: this run predates resumable runs (no sweep spec in its manifest)")
    return SweepSpec.from_dict(manifest["sweep"])
