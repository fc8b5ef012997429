"""Join runs from different devices on what was run, and set their figures side by side.

Two rows are the same workload when they ran the same artifact — the same sha256, so a preset
(`-m synth:llama-3.2-1b -q q4_k_m`), its exported file run by path and the same file from a Hub cache are
one — or, where a record has no sha256 (older runs), the same `config_id` (model + quantization + backend
+ workload) — with the same backend and workload (batch, lengths, context, KV type, sampler). Settings that
only say how a device ran it (threads, GPU layers, micro-batch, flash attention, provider) never split a
workload: each side shows them instead, and where one side measured a workload under several of them (a
threads sweep) it shows its fastest decode and says how many it chose from. `loose=True` keeps only
batch, prompt and generated lengths of the workload, and every row says it was paired loosely. Emulated
and real runs are paired only with a label on the emulated side, never silently.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from edgeprof.analysis.prediction import row_predictor, unavailable_reason
from edgeprof.analysis.roof_share import roof_shares
from edgeprof.backends.base import BACKEND_OPTIONS
from edgeprof.config import Hyperparameters, execution_settings, workload_id
from edgeprof.errors import ConfigError, EdgeprofError
from edgeprof.hardware.devices import DeviceProfile, get_profile, load_calibration
from edgeprof.results.records import read_records
from edgeprof.results.rundir import read_manifest
from edgeprof.results.stats import mean_std
from edgeprof.results.summary import COMPARED, ratio, summarize

LOOSE_KEY = ("model", "quant", "backend", "batch", "prompt_tokens", "gen_tokens")
LOOSE_FIELDS = ("batch", "prompt_tokens", "gen_tokens")  # what --loose keeps of a workload
NEAREST_FIELDS = ("batch", "prompt_tokens")  # a report's last resort, every pair labelled with what differs
# Device kinds from the edge to the server: the edge side comes first, ratios are "server / edge".
_KIND_ORDER = {"edge": 0, "sbc": 0, "embedded": 0, "laptop": 1, "desktop": 2, "workstation": 3, "server": 4}


@dataclass
class Run:
    path: Path
    manifest: dict
    rows: list[dict]
    suffix: str = ""  # set by `disambiguate` when two runs share a device
    paths: list[Path] = field(default_factory=list)  # every run directory merged into this side

    def __post_init__(self):
        self.paths = self.paths or [self.path]

    @property
    def label(self) -> str:
        device = self.manifest.get("device", {})
        name = device.get("profile", "?") + self.suffix
        return f"{name} (emulated)" if device.get("emulated") else name

    @property
    def device_name(self) -> str:
        """The device in words, for titles, legends and sentences: the profile, or for a generic CPU profile
        the CPU and its cores (`AMD EPYC 2-core CPU`); never a run id."""
        device = self.manifest.get("device", {})
        profile = str(device.get("profile", "?"))
        host = device.get("host") or {}
        name = profile
        if profile.startswith("generic") and host.get("cpu_model"):
            cores = host.get("physical_cores") or host.get("logical_cores")
            name = f"{host['cpu_model']} {cores}-core CPU" if cores else f"{host['cpu_model']} CPU"
        return f"{name} (emulated)" if device.get("emulated") else name

    @property
    def device_key(self) -> tuple:
        """Runs with equal keys were made on the same kind of machine and merge into one side of a report."""
        device = self.manifest.get("device", {})
        host = device.get("host") or {}
        gpus = tuple(str(g.get("name", g)) if isinstance(g, dict) else str(g) for g in device.get("gpus") or ())
        return (device.get("profile"), bool(device.get("emulated")), host.get("cpu_model"),
                host.get("physical_cores"), gpus)

    @property
    def kind_rank(self) -> int:
        return _KIND_ORDER.get(str(self.manifest.get("device", {}).get("kind", "")), 2)

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
    unavailable: list[str | None] = field(default_factory=list)  # per run: why it has no prediction
    basis: str = ""  # why the rows are one workload: the same artifact bytes, or the same config id
    choices: list[int] = field(default_factory=list)  # per run: how many rows (execution settings) it had


def disambiguate(runs: list[Run]) -> None:
    """Runs from the same device get their run id in the label, so columns stay apart."""
    labels = [r.label for r in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.suffix = f" {run.manifest.get('run_id', run.path.name)}"


def load_run(path: Path) -> Run:
    """A run directory: its manifest and per-configuration summary rows (from records.jsonl), each with the
    artifact's sha256 where its records carry it, and `<metric>_mean`/`_std` for every numeric metric the
    records hold beyond the summary's own (fields later issues add reach the report without a change here)."""
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise ConfigError(f"{path}: not a run directory (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        raise ConfigError(f"{manifest_path}: not readable JSON") from None
    records = read_records(path / "records.jsonl")
    ok: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if record.get("status") == "ok":
            ok[record["run_key"]].append(record)
    rows = [r for r in summarize(records) if r["status"] == "ok"]
    for row in rows:
        group = ok.get(row["run_key"], [])
        row["artifact_sha256"] = (group[0].get("model") or {}).get("sha256") if group else None
        row["hub_commit"] = ((group[0].get("model") or {}).get("hub") or {}).get("commit") if group else None
        row["run_id"] = manifest.get("run_id", path.name)
        for name in sorted({k for r in group for k, v in r["metrics"].items() if _is_number(v)}):
            if f"{name}_mean" not in row and name not in row:
                row[f"{name}_mean"], row[f"{name}_std"] = mean_std([r["metrics"].get(name) for r in group])
    run = Run(path, manifest, rows)
    add_roof_shares(run)
    return run


def add_roof_shares(run: Run) -> None:
    """Each row's share of its device's bandwidth (decode) and compute (prefill) roof (`roof_share.FIELDS`),
    where the run's device and model can state them."""
    try:
        profile, calibration = run_device(run)
    except (EdgeprofError, KeyError):
        return
    for row in run.rows:
        row.update(roof_shares(row, profile, calibration))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def merge_by_device(runs: list[Run]) -> list[Run]:
    """One side per device: runs made on the same kind of machine (profile, emulation, CPU, GPUs) pooled,
    edge devices first. A report compares devices, not run directories."""
    sides: dict[tuple, Run] = {}
    for run in runs:
        side = sides.get(run.device_key)
        if side is None:
            sides[run.device_key] = Run(run.path, run.manifest, list(run.rows), paths=list(run.paths))
        else:
            side.rows += run.rows
            side.paths += run.paths
    merged = sorted(sides.values(), key=lambda side: side.kind_rank)
    names = [side.device_name for side in merged]
    for index, side in enumerate(merged):  # two machines that read the same: numbered, never a run id
        if names.count(side.device_name) > 1:
            side.suffix = f" #{names[:index + 1].count(side.device_name)}"
    return merged


def settings_of(row: dict) -> str:
    """How a device ran a summary row (threads, GPU layers, ...), only the settings its backend reads."""
    return execution_settings(row, BACKEND_OPTIONS.get(str(row["backend"])))


def _keep(loose: bool | tuple[str, ...]) -> tuple[str, ...] | None:
    return LOOSE_FIELDS if loose is True else (loose or None)


def _keys(row: dict, loose: bool | tuple[str, ...]) -> list[str]:
    """The keys under which a row meets the same workload elsewhere: its artifact bytes, and its config id
    (or, loosely, its model and quantization)."""
    work = workload_id("", str(row["backend"]), Hyperparameters.from_dict(row), _keep(loose))
    keys = [f"model:{row['model']}|{row['quant']}|{work}" if loose else f"config:{row['config_id']}"]
    if row.get("artifact_sha256"):
        keys.append(f"sha256:{row['artifact_sha256']}|{work}")
    return keys


def _fastest(rows: list[dict]) -> dict:
    return max(rows, key=lambda r: -math.inf if math.isnan(r.get("decode_tps_mean", math.nan)) else r["decode_tps_mean"])


def _display_model(rows: list[dict]) -> str:
    """A preset's name where any side ran one (a file by path reads as its preset), else the first name."""
    names = [str(r["model"]) for r in rows]
    return next((n for n in names if n.startswith("synth:")), names[0])


def _basis(rows: list[dict]) -> str:
    shas = {r.get("artifact_sha256") for r in rows}
    if None not in shas and len(shas) == 1:
        return "same artifact (sha256 " + next(iter(shas))[:12] + ")"
    if None in shas:
        return "same configuration id (a record without sha256)"
    return "same model and quantization; artifact bytes differ (" + ", ".join(sorted(s[:12] for s in shas)) + ")"


def group_rows(runs: list[Run], loose: bool | tuple[str, ...] = False) -> list[list[list[dict]]]:
    """Every workload of `runs`: per workload, per run, the rows that ran it (in first-seen order)."""
    parent: dict[tuple[int, int], tuple[int, int]] = {}

    def find(node):
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    owner: dict[str, tuple[int, int]] = {}
    for i, run in enumerate(runs):
        for j, row in enumerate(run.rows):
            parent[(i, j)] = (i, j)
            for key in _keys(row, loose):
                if key in owner:
                    parent[find((i, j))] = find(owner[key])
                else:
                    owner[key] = (i, j)
    groups: dict[tuple[int, int], list[list[dict]]] = {}
    for i, run in enumerate(runs):
        for j, row in enumerate(run.rows):
            groups.setdefault(find((i, j)), [[] for _ in runs])[i].append(row)
    return list(groups.values())


def join(runs: list[Run], loose: bool | tuple[str, ...] = False) -> list[Joined]:
    """Workloads present in at least two runs, in the first run's order, then the others'. `loose`: True
    for `--loose` (batch, prompt and gen only), or the workload fields that count."""
    joined = []
    for group in group_rows(runs, loose):
        if sum(bool(rows) for rows in group) < 2:
            continue
        present = [_fastest(rows) if rows else None for rows in group]
        everyone = [r for rows in group for r in rows]
        first = next(row for row in present if row is not None)
        identity = {k: first[k] for k in LOOSE_KEY}
        identity["model"] = _display_model(everyone)
        key = workload_id(first.get("artifact_sha256") or first["config_id"], str(first["backend"]),
                          Hyperparameters.from_dict(first), _keep(loose))
        joined.append(Joined(key, identity, present, basis=_basis([r for r in present if r is not None]),
                             choices=[len(rows) for rows in group]))
    return joined


def run_device(run: Run):
    """(profile, calibration) the run was made with, from its manifest; runs older than that fall back to
    today's catalog and this host's calibration (and `Run.prediction_basis` says so)."""
    stored = run.manifest.get("device_profile")
    if stored:
        return _with_todays_class(DeviceProfile(**stored)), run.manifest.get("calibration")
    profile = get_profile(run.manifest["device"]["profile"])
    return profile, load_calibration(profile.name)


def _with_todays_class(profile):
    """A profile stored before profiles named their class takes the class today's catalog gives the same device
    (a class says what kind of kernels a device runs, which a run made earlier does not change)."""
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
    row on its run's device, or None where there is none (`row_prediction` says why)."""
    found = row_prediction(run, row)
    return None if isinstance(found, str) else found


def row_prediction(run: Run, row: dict):
    """(Prediction, ceilings' source) for one summary row on its run's device, or the reason there is none
    (not llama.cpp, a model this host cannot describe from the run and its caches — a Hub model outside
    the local cache is never downloaded —, a family the roofline does not model, or a device without
    figures or calibration). Presets and HF folders predict at the row's quantization; a GGUF file (or a
    Hub GGUF in the local cache) from its own metadata, wherever it was run."""
    try:
        profile, calibration = run_device(run)
        chain = row_predictor(row, profile, calibration)
        return chain.predict(row["batch"], row["prompt_tokens"], row["gen_tokens"], row.get("kv_type") or "f16",
                             row.get("sampler") or "greedy", int(row.get("n_ubatch") or 512)), chain.ceilings.source
    except (EdgeprofError, KeyError) as exc:
        return unavailable_reason(exc)


def add_predictions(joined: list[Joined], runs: list[Run]) -> None:
    """Roofline decode t/s and TTFT for each run's device where the roofline can say, else why not
    (`Joined.unavailable`)."""
    for item in joined:
        item.predicted, item.unavailable = [], []
        for run, row in zip(runs, item.by_run):
            found = row_prediction(run, row) if row is not None else None
            p, basis = found if isinstance(found, tuple) else (None, None)
            item.unavailable.append(found if isinstance(found, str) else None)
            item.predicted.append(None if p is None else {
                "decode_tps": p.decode_tps, "ttft_ms": p.ttft_s * 1e3, "decode_bound": p.bound("decode"),
                "ceilings": basis})


def flat_rows(joined: list[Joined], runs: list[Run], loose: bool) -> list[dict]:
    """One flat dict per joined configuration (each run's figures, ratios to the first, predictions),
    for the md/csv/json outputs."""
    flat = []
    for item in joined:
        row = {**item.identity, "config_key": item.key, "loose": loose, "joined_on": item.basis}
        for run, measured in zip(runs, item.by_run):
            for column, _, _ in COMPARED:
                row[f"{run.label}:{column}"] = None if measured is None else measured.get(column)
            row[f"{run.label}:settings"] = None if measured is None else settings_of(measured)
        base = item.by_run[0]
        for run, measured in zip(runs[1:], item.by_run[1:]):
            for column, _, _ in COMPARED:
                row[f"{run.label}/{runs[0].label}:{column}"] = ratio(
                    None if measured is None else measured.get(column), base.get(column) if base else None)
        for index, (run, pred) in enumerate(zip(runs, item.predicted or [None] * len(runs))):
            row[f"{run.label}:predicted_decode_tps"] = pred["decode_tps"] if pred else None
            row[f"{run.label}:predicted_ceilings"] = pred["ceilings"] if pred else None
            why = item.unavailable[index] if index < len(item.unavailable) else None
            row[f"{run.label}:prediction_unavailable"] = why
        flat.append(row)
    return flat


@dataclass
class Comparison:
    """`edgeprof compare`: the runs (labelled apart), their joined configurations with predictions where
    asked, and the notes a reader needs beside the table (emulated sides, older runs, which ceilings)."""

    runs: list[Run]
    joined: list[Joined]
    loose: bool
    notes: list[str] = field(default_factory=list)

    def flat_rows(self) -> list[dict]:
        return flat_rows(self.joined, self.runs, self.loose)


def compare_runs(paths: list[Path], loose: bool = False, predicted: bool = True) -> Comparison:
    """Load, label and join run directories (two at least); `predicted` adds each device's roofline
    prediction from the runs and this host's caches only. Nothing in common is a one-line ConfigError."""
    if len(paths) < 2:
        raise ConfigError("compare needs at least two run directories")
    runs = [load_run(path) for path in paths]
    disambiguate(runs)
    notes = []
    if len({r.emulated for r in runs}) > 1:
        notes.append("note: emulated and real runs are compared; emulated columns are labelled (emulated) — "
                     "emulation matches cores and memory, not bandwidth, clocks or power")
    joined = join(runs, loose)
    if not joined:
        hint = "" if loose else "; --loose joins on model, quant, backend, batch, prompt and gen only"
        raise ConfigError(f"the runs have no configuration in common{hint}")
    if predicted:
        add_predictions(joined, runs)
        older = [run.label for run in runs if run.prediction_basis != "manifest"]
        if older:
            notes.append(f"note: {', '.join(older)} predate stored device profiles; their predictions use "
                         "today's catalog and this host's calibration")
        for index, run in enumerate(runs):  # which ceilings each run's predictions used
            bases = sorted({p["ceilings"] for item in joined if len(item.predicted) > index and
                            (p := item.predicted[index])})
            if bases:
                notes.append(f"predictions for {run.label}: {'; '.join(bases)}")
    return Comparison(runs, joined, loose, notes)


def run_rows(run_dir: Path) -> tuple[dict, list[dict], list[dict]]:
    """(manifest, records, summary rows) of one run directory for `edgeprof results`: every configuration's
    row (failed ones too), each with its device and its share of the device's roofs."""
    manifest = read_manifest(run_dir)
    records = read_records(run_dir / "records.jsonl")
    rows = summarize(records)
    for row in rows:
        row["device"] = manifest.get("device", {}).get("profile")
    add_roof_shares(Run(run_dir, manifest, rows))
    return manifest, records, rows
