"""Small run directories with known numbers, written as a run writes them (manifest.json, records.jsonl and
optionally samples.csv), for the compare and report tests: no model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

from edgeprof.config import Hyperparameters, config_id, run_key
from edgeprof.results.records import Record

CPU_DEVICE = {"profile": "raspberry-pi-5", "kind": "edge", "emulated": False,
              "host": {"cpu_model": "Cortex-A76", "physical_cores": 4, "logical_cores": 4}}
GPU_DEVICE = {"profile": "h200", "kind": "server", "emulated": False,
              "host": {"cpu_model": "Intel(R) Xeon(R) Platinum", "physical_cores": 16, "logical_cores": 16},
              "gpus": [{"name": "NVIDIA H200", "uuid": "GPU-fake"}]}
SHA = "ab" * 32


def workload(model: str = "synth:llama-3.2-1b", quant: str = "q4_k_m", *, path: str | None = None,
             sha256: str | None = SHA, backend: str = "llama.cpp", repetitions: list[dict] | None = None,
             **settings) -> dict:
    """One configuration: `model` run as a preset, or (with `path`) as that file, measured `repetitions`
    times (each a metrics dict)."""
    return {"model": model, "quant": quant, "path": path, "sha256": sha256, "backend": backend,
            "hp": Hyperparameters(**settings), "repetitions": repetitions or [{"decode_tps": 10.0}]}


def make_run(folder: Path, run_id: str, device: dict, workloads: list[dict], samples: str | None = None) -> Path:
    path = folder / run_id
    path.mkdir(parents=True)
    lines = []
    for item in workloads:
        by_file = item["path"] is not None
        name = Path(item["path"]).stem if by_file else item["model"]
        identity = f"sha256:{item['sha256'][:16]}" if by_file else name
        cid = config_id(identity, item["quant"], item["backend"], item["hp"])
        model = {"name": name, "spec": item["path"] or item["model"], "quant": item["quant"], "format": "gguf",
                 "sha256": item["sha256"], "path": item["path"], "bytes": 1000,
                 "preset": None if by_file else item["model"].removeprefix("synth:")}
        for index, metrics in enumerate(item["repetitions"]):
            record = Record(run_id=run_id, config_id=cid, run_key=run_key(cid, item["hp"]), repetition=index,
                            status="ok", backend=item["backend"], model=model,
                            hyperparameters=item["hp"].to_dict(), device=device, metrics=metrics)
            lines.append(record.to_json())
    (path / "records.jsonl").write_text("\n".join(lines) + "\n")
    (path / "manifest.json").write_text(json.dumps({"run_id": run_id, "device": device, "status": "complete"}))
    if samples is not None:
        (path / "samples.csv").write_text(samples)
    return path
