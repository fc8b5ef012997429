"""Measured and predicted operator shares, one row per (device, configuration, source), for the run table,
`results`, `compare` and `report` alike.

Measured shares come from `--profile-ops` (ONNX Runtime's profiler, or llama.cpp's eval-callback windows);
predicted ones from the roofline on the run's own device. Each row names its device, model, quantization
and backend, and says which it is, so a figure never passes a prediction off as a measurement.
"""

from __future__ import annotations

from edgeprof.analysis.compare import Run, predict_row
from edgeprof.backends.op_categories import OP_CATEGORIES, predicted_as_measured

PHASES = ("prefill", "decode")


def measured_shares(row: dict, phase: str) -> dict[str, float] | None:
    shares = {c: row.get(f"ops_{phase}_share_{c}") for c in OP_CATEGORIES}
    return {c: v or 0.0 for c, v in shares.items()} if any(v is not None for v in shares.values()) else None


def share_rows(runs: list[Run], predicted: bool = True) -> list[dict]:
    """For every configuration profiled in `runs`: its measured shares, and beside them the roofline's
    prediction for the same configuration on the same device where one exists."""
    out = []
    for run in runs:
        for row in run.rows:
            measured = {phase: measured_shares(row, phase) for phase in PHASES}
            if not any(measured.values()):
                continue
            identity = {"device": run.label, "model": str(row["model"]).removeprefix("synth:"), "quant": row["quant"],
                        "backend": row["backend"], "batch": row["batch"], "prompt_tokens": row["prompt_tokens"]}
            out.append({**identity, "source": "measured", "method": row.get("ops_method", ""),
                        "coverage_decode": row.get("ops_decode_coverage"),
                        **{f"{phase}_{c}": (measured[phase] or {}).get(c) for phase in PHASES for c in OP_CATEGORIES}})
            prediction = predict_row(run, row) if predicted else None
            if prediction is not None:
                shares = {phase: predicted_as_measured(prediction.shares(phase)) for phase in PHASES}
                out.append({**identity, "source": "predicted", "method": "roofline", "coverage_decode": None,
                            **{f"{phase}_{c}": shares[phase].get(c, 0.0) for phase in PHASES for c in OP_CATEGORIES}})
    return out


def series_name(row: dict) -> str:
    """`h100-sxm · llama-3.2-1b q4_k_m · llama.cpp b1 p128 · measured`: device, model, quant, never a run id."""
    return (f"{row['device']} · {row['model']} {row['quant']} · {row['backend']} b{row['batch']} "
            f"p{row['prompt_tokens']} · {row['source']}")
