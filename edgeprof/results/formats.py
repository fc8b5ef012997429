"""Write summaries as Markdown, CSV, JSON or JSONL, and llama.cpp records as llama-bench JSON.

llama-bench's `-o json` prints one object per test: `pp<P>` (n_prompt=P, n_gen=0) and `tg<G>` (n_prompt=0,
n_gen=G, n_depth=P: decoding after a P-token prompt, which is what edgeprof measures). Each llama.cpp
configuration becomes those two objects with llama-bench's field names and units (ns, tokens/s), so tools
written for llama-bench output read edgeprof runs unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict

FORMATS = ("table", "md", "csv", "json", "jsonl", "llama-bench")
MD_COLUMNS = ("model", "quant", "backend", "device", "batch", "prompt_tokens", "gen_tokens", "threads",
              "gpu_layers", "ttft_ms_mean", "prefill_tps_mean", "decode_tps_mean", "itl_ms_p50_mean",
              "peak_rss_mb_mean", "j_per_token_decode_mean", "status")


def _clean(value):
    """NaN is not JSON; write null instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def to_markdown(rows: list[dict], columns: tuple[str, ...] = MD_COLUMNS) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if isinstance(value, float):
                value = "-" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
            cells.append("" if value is None else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_json(rows: list[dict]) -> str:
    return json.dumps([{k: _clean(v) for k, v in row.items()} for row in rows], indent=2)


def to_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n" for row in rows)


def to_llama_bench(records: list[dict], manifest: dict) -> str:
    """llama-bench `-o json` objects (pp and tg per llama.cpp configuration) from ok records."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if record["status"] == "ok" and record["backend"] == "llama.cpp":
            groups[record["run_key"]].append(record)
    host = manifest.get("device", {}).get("host", {})
    entries = []
    for group in groups.values():
        first = group[0]
        hp, model = first["hyperparameters"], first["model"]
        info = {
            "build_commit": manifest.get("libraries", {}).get("llama-cpp-python"), "build_number": 0,
            "cpu_info": host.get("cpu_model", ""), "gpu_info": ", ".join(host.get("gpus", []) or []),
            "backends": "CUDA" if hp["gpu_layers"] else "CPU", "model_filename": model.get("path") or "",
            "model_type": f"{model.get('name')} {model.get('quant')}", "model_size": model.get("bytes") or 0,
            "model_n_params": model.get("parameters") or 0, "n_batch": hp["n_batch"], "n_ubatch": hp["n_ubatch"],
            "n_threads": hp["threads"], "type_k": hp["kv_type"], "type_v": hp["kv_type"],
            "n_gpu_layers": 99 if hp["gpu_layers"] == -1 else hp["gpu_layers"],
            "flash_attn": {"on": 1, "off": 0}.get(hp["flash_attn"], -1), "use_mmap": True, "embeddings": False,
            "test_time": manifest.get("started_at", ""), "edgeprof_config_id": first["config_id"],
            "n_seq": hp["batch"],
        }
        for test, n_prompt, n_gen, n_depth, tokens_key, ms_key in (
                ("pp", hp["prompt_tokens"], 0, 0, "prompt_tokens_total", "prefill_ms"),
                ("tg", 0, hp["gen_tokens"], hp["prompt_tokens"], "decoded_tokens_total", "decode_ms")):
            if test == "tg" and not hp["gen_tokens"]:
                continue
            samples_ns = [int(r["metrics"][ms_key] * 1e6) for r in group]
            samples_ts = [r["metrics"][tokens_key] / (r["metrics"][ms_key] / 1e3) for r in group]
            entries.append({**info, "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": n_depth,
                            "avg_ns": int(statistics.mean(samples_ns)),
                            "stddev_ns": int(statistics.stdev(samples_ns)) if len(samples_ns) > 1 else 0,
                            "avg_ts": statistics.mean(samples_ts),
                            "stddev_ts": statistics.stdev(samples_ts) if len(samples_ts) > 1 else 0.0,
                            "samples_ns": samples_ns, "samples_ts": samples_ts})
    return json.dumps(entries, indent=2)
