"""ONNX Runtime: ONNX artifacts (optimum's export, ORT's quantizers), execution providers, ORT's own
profiler. `BACKEND` is what the registry (`backends.registry`) reads; every entry point imports
onnxruntime (and the exporter's torch) inside the call, so importing this package costs nothing."""

from __future__ import annotations

from pathlib import Path

from edgeprof.backends.onnxruntime.options import OnnxRuntimeOptions
from edgeprof.backends.registry import Backend, Target
from edgeprof.config import Hyperparameters
from edgeprof.quant.onnx import ONNX_TABLE


def _open_session(model_path: str, hp: Hyperparameters, need_logits: bool = False):
    from edgeprof.backends.onnxruntime.session import OnnxRuntimeSession

    return OnnxRuntimeSession(model_path, hp, all_positions=need_logits)


def _uses_gpu(hp: Hyperparameters) -> bool:
    return OnnxRuntimeOptions.of(hp).provider != "cpu"


def _profile_ops(model_path: str, hp: Hyperparameters, prompts):
    from edgeprof.backends.onnxruntime.profile import profile_ops

    return profile_ops(model_path, hp, prompts)


def _export(source, quant: str, progress=None, calibration_text=None):
    from edgeprof.export.onnx_export import export_onnx

    return export_onnx(source, quant, progress=progress, calibration_text=calibration_text)


def _parent_quant(_source, quant: str) -> str | None:
    from edgeprof.export.onnx_export import onnx_parent_quant

    return onnx_parent_quant(quant)


def _check_file(path: Path) -> dict:
    from edgeprof.export.onnx_export import check_onnx

    check_onnx(path)
    return {}


def _shipped_files(artifact) -> list[Path]:
    """An exported variant's whole folder (graph, external data, config and tokenizer, which fidelity reads);
    a user's ONNX file and its external data."""
    from edgeprof.export.artifacts import SIDECAR_SUFFIX

    main = Path(artifact.path)
    if artifact.exporter != "user-supplied":
        others = sorted(p for p in main.parent.iterdir()
                        if p.is_file() and p != main and ".partial-" not in p.name and not p.name.endswith(SIDECAR_SUFFIX))
        return [main, *others]
    data = main.with_name(main.name + ".data")
    return [main, data] if data.exists() else [main]


def _check_grid(grid: dict, target: Target | None) -> None:
    from edgeprof.backends.onnxruntime.session import ort_providers

    for provider in grid.get("provider", ["cpu"]):
        ort_providers(provider, target.ort_providers if target else None)


BACKEND = Backend(
    name="onnxruntime", format="onnx", options=OnnxRuntimeOptions, quants=ONNX_TABLE,
    open_session=_open_session, profile_ops=_profile_ops, export=_export, parent_quant=_parent_quant,
    check_file=_check_file, shipped_files=_shipped_files, uses_gpu=_uses_gpu, check_grid=_check_grid,
    aliases=("ort", "onnx"))
