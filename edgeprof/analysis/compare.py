"""Join runs from different devices on the configuration id and set their figures side by side.

A strict join uses `config_id` (model + quantization + backend + workload), so only identical work is
paired. `loose=True` joins on model, quantization, backend, batch, prompt and generated lengths only
(ignoring KV type, sampler, context), and every row says it was paired loosely. Emulated and real runs
are paired only with a label on the emulated side, never silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeprof.errors import ConfigError
from edgeprof.results.records import read_records
from edgeprof.results.summary import COMPARED, ratio, summarize

LOOSE_KEY = ("model", "quant", "backend", "batch", "prompt_tokens", "gen_tokens")


@dataclass
class Run:
    path: Path
    manifest: dict
    rows: list[dict]
    suffix: str = ""  # set by `disambiguate` when two runs share a device

    @property
    def label(self) -> str:
        device = self.manifest.get("device", {})
        name = device.get("profile", "?") + self.suffix
        return f"{name} (emulated)" if device.get("emulated") else name

    @property
    def prediction_basis(self) -> str:
        """Where this run's predictions take the device from: its own manifest, or (older runs) today's."""
        return "manifest" if self.manifest.get("device_profile") else "today's catalog and calibration"

    @property
    def emulated(self) -> bool:
        return bool(self.manifest.get("device", {}).get("emulated"))


@dataclass
class Joined:
    key: str
    identity: dict  # model, quant, backend, batch, prompt, gen
    by_run: list[dict | None]  # one summary row per run (None where the run lacks it)
    predicted: list[dict | None] = field(default_factory=list)


def disambiguate(runs: list[Run]) -> None:
    """Runs from the same device get their run id in the label, so columns stay apart."""
    labels = [r.label for r in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.suffix = f" {run.manifest.get('run_id', run.path.name)}"


def load_run(path: Path) -> Run:
    """A run directory: its manifest and per-configuration summary rows (from records.jsonl)."""
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise ConfigError(f"{path}: not a run directory (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        raise ConfigError(f"{manifest_path}: not readable JSON") from None
    rows = [r for r in summarize(read_records(path / "records.jsonl")) if r["status"] == "ok"]
    run = Run(path, manifest, rows)
    add_roof_shares(run)
    return run


def add_roof_shares(run: Run) -> None:
    """Each row's share of its device's bandwidth (decode) and compute (prefill) roof (`roof_share.FIELDS`),
    where the run's device and model can state them."""
    from edgeprof.analysis.roof_share import roof_shares
    from edgeprof.errors import EdgeprofError

    try:
        profile, calibration = run_device(run)
    except (EdgeprofError, KeyError):
        return
    for row in run.rows:
        row.update(roof_shares(row, profile, calibration))


def _key(row: dict, loose: bool) -> str:
    return "|".join(str(row[k]) for k in LOOSE_KEY) if loose else row["config_id"]


def join(runs: list[Run], loose: bool = False) -> list[Joined]:
    """Rows present in at least two runs, in the first run's order, then the others'."""
    keyed = [{_key(row, loose): row for row in run.rows} for run in runs]
    order: list[str] = []
    for table in keyed:
        order += [k for k in table if k not in order]
    joined = []
    for key in order:
        present = [table.get(key) for table in keyed]
        if sum(row is not None for row in present) < 2:
            continue
        first = next(row for row in present if row is not None)
        identity = {k: first[k] for k in LOOSE_KEY}
        joined.append(Joined(key, identity, present))
    return joined


def run_device(run: Run):
    """(profile, calibration) the run was made with, from its manifest; runs older than that fall back to
    today's catalog and this host's calibration (and `Run.prediction_basis` says so)."""
    from edgeprof.devices import DeviceProfile

    stored = run.manifest.get("device_profile")
    if stored:
        return _with_todays_class(DeviceProfile(**stored)), run.manifest.get("calibration")
    from edgeprof.devices import get_profile, load_calibration

    profile = get_profile(run.manifest["device"]["profile"])
    return profile, load_calibration(profile.name)


def _with_todays_class(profile):
    """A profile stored before profiles named their class takes the class today's catalog gives the same device
    (a class says what kind of kernels a device runs, which a run made earlier does not change)."""
    from edgeprof.devices import DeviceProfile, get_profile
    from edgeprof.errors import EdgeprofError

    if "class" in profile.data:
        return profile
    try:
        today = get_profile(profile.name)
    except EdgeprofError:
        return profile
    data = dict(profile.data)
    if "class" in today.data:
        data["class"] = today.data["class"]
    if (today.data.get("cpu") or {}).get("class") and isinstance(data.get("cpu"), dict):
        data["cpu"] = {**data["cpu"], "class": today.data["cpu"]["class"]}
    return DeviceProfile(profile.name, profile.display_name, profile.kind, data)


def predict_row(run: Run, row: dict):
    """The roofline `Prediction` for one summary row (see `predict_row_with_basis`), or None."""
    found = predict_row_with_basis(run, row)
    return found[0] if found else None


def predict_row_with_basis(run: Run, row: dict):
    """(roofline `Prediction`, which ceilings it used: calibrated, class factors or datasheet) for one summary
    row on its run's device, or None where there is none (not
    llama.cpp, a model this host cannot describe, a family the roofline does not model, or a device without
    figures or calibration). Presets and HF folders predict at the row's quantization; a GGUF file (or a Hub
    GGUF in the local cache) from its own metadata, wherever it was run."""
    from edgeprof.analysis.ceilings import device_ceilings
    from edgeprof.analysis.roofline import predict
    from edgeprof.errors import EdgeprofError
    from edgeprof.quant import kv_bytes_per_element
    from edgeprof.source import resolve

    synth = str(row["model"]).startswith("synth:")
    spec = str(row["model"]).split("@")[0] if synth else row.get("model_spec")
    if row["backend"] != "llama.cpp" or not spec:
        return None
    try:
        architecture, quant = resolve(str(spec)).roofline_inputs(str(row["quant"]))
        profile, calibration = run_device(run)
        on_gpu = bool(profile.data.get("accelerator")) and row["gpu_layers"] != 0
        ceilings = device_ceilings(profile, quant, on_gpu, calibration)
        return predict(architecture, quant, ceilings, row["batch"], row["prompt_tokens"], row["gen_tokens"],
                       kv_bytes_per_element(row["kv_type"]), row.get("sampler") or "greedy",
                       int(row.get("n_ubatch") or 512)), ceilings.source
    except (EdgeprofError, KeyError):
        return None


def add_predictions(joined: list[Joined], runs: list[Run]) -> None:
    """Roofline decode t/s and TTFT for each run's device, where the model is a preset and the quant GGUF."""
    for item in joined:
        item.predicted = []
        for run, row in zip(runs, item.by_run):
            found = predict_row_with_basis(run, row) if row is not None else None
            p, basis = found or (None, None)
            item.predicted.append(None if p is None else {
                "decode_tps": p.decode_tps, "ttft_ms": p.ttft_s * 1e3, "decode_bound": p.bound("decode"),
                "ceilings": basis})


def flat_rows(joined: list[Joined], runs: list[Run], loose: bool) -> list[dict]:
    """One flat dict per joined configuration (each run's figures, ratios to the first, predictions),
    for the md/csv/json outputs."""
    flat = []
    for item in joined:
        row = {**item.identity, "config_key": item.key, "loose": loose}
        for run, measured in zip(runs, item.by_run):
            for column, _, _ in COMPARED:
                row[f"{run.label}:{column}"] = None if measured is None else measured.get(column)
        base = item.by_run[0]
        for run, measured in zip(runs[1:], item.by_run[1:]):
            for column, _, _ in COMPARED:
                row[f"{run.label}/{runs[0].label}:{column}"] = ratio(
                    None if measured is None else measured.get(column), base.get(column) if base else None)
        for run, pred in zip(runs, item.predicted or [None] * len(runs)):
            row[f"{run.label}:predicted_decode_tps"] = pred["decode_tps"] if pred else None
            row[f"{run.label}:predicted_ceilings"] = pred["ceilings"] if pred else None
        flat.append(row)
    return flat
