"""Mean and standard deviation of each metric over a configuration's repetitions."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path

from edgeprof.backends.op_profile import OpProfile
from edgeprof.results.stats import mean_std

# (summary column, label, higher is better) for the side-by-side figures and their ratios.
COMPARED = (
    ("decode_tps_mean", "decode t/s", True),
    ("prefill_tps_mean", "prefill t/s", True),
    ("ttft_ms_mean", "TTFT ms", False),
    ("j_per_token_decode_mean", "J/token decode", False),
    ("tokens_per_j_decode_mean", "tokens/J decode", True),
    ("peak_rss_mb_mean", "peak RSS MB", False),
    ("gpu_mem_used_mb_peak_mean", "GPU mem MB", False),
    # fidelity over the run's text (once per configuration): perplexity, and against the unquantized parent
    ("fidelity_ppl", "perplexity", False),
    ("fidelity_kl_mean", "KL vs parent", False),
    ("fidelity_top1_agreement", "top-1 vs parent", True),
    # set by analysis.compare.add_roof_shares: how close each run came to its own device's roofs
    ("decode_roof_share", "decode / bandwidth roof", True),
    ("prefill_roof_share", "prefill / compute roof", True),
)


def ratio(value: float | None, base: float | None) -> float:
    if value is None or base is None or base == 0 or math.isnan(value) or math.isnan(base):
        return math.nan
    return value / base


SUMMARY_METRICS = ("ttft_ms", "prefill_tps", "decode_tps", "itl_ms_mean", "itl_ms_p50", "itl_ms_p90",
                   "itl_ms_p99", "e2e_ms", "peak_rss_mb", "load_ms", "energy_prefill_j", "energy_decode_j",
                   "energy_per_request_j", "j_per_token_prefill", "j_per_token_decode", "tokens_per_j_decode", "j_per_token_decode_above_idle",
                   "power_decode_w_mean", "power_decode_w_p50", "power_decode_w_peak", "temp_c_start", "temp_c_max",
                   "temp_c_end", "gpu_mem_used_mb_peak", "gpu_mem_mb")
# Older runs recorded one GPU's memory under its NVML index only (every run then used GPU 0).
_OLDER_NAMES = {"gpu_mem_used_mb_peak": "nvml_gpu0_mem_used_mb_peak"}


def summarize(records: list[dict]) -> list[dict]:
    """One row per run_key: identity, settings, status and `<metric>_mean` / `<metric>_std`."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        groups[record["run_key"]].append(record)
    rows = []
    for key, group in groups.items():
        first = group[0]
        ok = [r for r in group if r["status"] == "ok"]
        failed = [r for r in group if r["status"] != "ok"]
        row = {
            "run_key": key, "config_id": first["config_id"], "model": first["model"].get("name"),
            "model_spec": first["model"].get("spec"), "format": first["model"].get("format"), "quant": first["model"].get("quant"),
            "bytes": first["model"].get("bytes"),
            "backend": first["backend"], "device": first["device"].get("profile"),
            **first["hyperparameters"],
            "repetitions": len(ok),
            "status": "ok" if ok and not failed else (failed[-1]["status"] if failed else "ok"),
            "error": failed[-1].get("error") if failed else None,
            "energy_source": first.get("sensors", {}).get("energy"),
            "throttled": any(r["metrics"].get("throttled") for r in ok) if ok else None,
        }
        for metric in SUMMARY_METRICS:
            older = _OLDER_NAMES.get(metric, metric)
            mean, std = mean_std([r["metrics"].get(metric, r["metrics"].get(older)) for r in ok])
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
        row.update(_once_per_config(ok[0]["metrics"] if ok else {}))
        rows.append(row)
    return rows


def _once_per_config(metrics: dict) -> dict:
    """Fidelity, operator shares, a sustained run's figures and the KV cache's bytes are one per configuration:
    flat columns pandas can read (a sustained run's limits as one text)."""
    flat = {k: v for k, v in metrics.items() if k.startswith(("fidelity_", "sustain_", "kv_cache_bytes"))}
    if isinstance(flat.get("sustain_limits"), list):
        flat["sustain_limits"] = ",".join(flat["sustain_limits"])
    if metrics.get("op_profile"):  # any backend's, older records' included, read as one typed shape
        profile = OpProfile.from_dict(metrics["op_profile"])
        for phase, measured in (("prefill", profile.prefill), ("decode", profile.decode)):
            for category, share in measured.share.items():
                flat[f"ops_{phase}_share_{category}"] = share
            for figure in ("coverage", "dilation"):  # where measured (llama.cpp): what the shares account for, and its cost
                if getattr(measured, figure) is not None:
                    flat[f"ops_{phase}_{figure}"] = getattr(measured, figure)
        flat["ops_method"] = profile.method
    return flat


def write_summary_csv(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
