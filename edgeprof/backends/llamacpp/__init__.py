"""llama.cpp through llama-cpp-python: GGUF artifacts, its own quantizer's types, the eval-callback
operator profiler. `BACKEND` is what the registry (`backends.registry`) reads; every entry point imports
llama_cpp inside the call, so importing this package costs nothing."""

from __future__ import annotations

from pathlib import Path

from edgeprof.backends.llamacpp.options import LlamaCppOptions
from edgeprof.backends.registry import Backend, Target
from edgeprof.config import Hyperparameters
from edgeprof.errors import BackendUnavailableError
from edgeprof.quant.gguf import GGUF_TABLE


def _open_session(model_path: str, hp: Hyperparameters, need_logits: bool = False):
    from edgeprof.backends.llamacpp.session import LlamaCppSession

    return LlamaCppSession(model_path, hp, need_logits=need_logits)


def _uses_gpu(hp: Hyperparameters) -> bool:
    return LlamaCppOptions.of(hp).gpu_layers != 0


def _profile_ops(model_path: str, hp: Hyperparameters, prompts):
    """The eval-callback profile; on a GPU with CUPTI's kernel times where cupti-python is installed."""
    from edgeprof.backends.llamacpp.profile import profile_ops

    if not _uses_gpu(hp):
        return profile_ops(model_path, hp, prompts)
    from edgeprof.backends.llamacpp.cuda_kernels import kernel_timer

    with kernel_timer() as timer:
        return profile_ops(model_path, hp, prompts, kernel_timer=timer)


def _export(source, quant: str, progress=None, calibration_text=None):
    from edgeprof.export.gguf_export import export_gguf

    return export_gguf(source, quant, progress=progress, calibration_text=calibration_text)


def _parent_quant(source, quant: str) -> str | None:
    from edgeprof.export.gguf_export import gguf_parent_quant

    return gguf_parent_quant(source, quant)


def _check_file(path: Path) -> dict:
    """A user's GGUF checked (magic, truncation) before llama.cpp sees it; its metadata, JSON-safe."""
    from edgeprof.export.gguf_check import check_gguf

    return {k: v for k, v in check_gguf(path).items() if isinstance(v, (str, int, float, bool))}


def _shipped_files(artifact) -> list[Path]:
    return [Path(artifact.path)]  # one GGUF file holds weights, vocabulary and metadata


def require_gpu_offload(target: Target | None = None) -> None:
    """GPU layers need a llama.cpp built with a GPU backend; say how to get one instead of failing later."""
    if target is None:
        from edgeprof.backends.llamacpp.lib import build_info

        offloads = build_info()["gpu_offload"]
    else:
        offloads = target.gpu_offload
    if not offloads:
        raise BackendUnavailableError(
            "--gpu-layers needs llama-cpp-python built with GPU support; this build is CPU-only. Reinstall with "
            "CMAKE_ARGS=\"-DGGML_CUDA=on\" pip install --force-reinstall --no-cache-dir llama-cpp-python "
            "(see scripts/gpu/README.md), or use --gpu-layers 0")


def _check_grid(grid: dict, target: Target | None) -> None:
    if any(layers != 0 for layers in grid.get("gpu_layers", [0])):
        require_gpu_offload(target)


def _prepare_worker() -> None:
    from edgeprof.backends.llamacpp.lib import load_llama_cpp

    load_llama_cpp()  # before numpy: see load_llama_cpp's docstring


BACKEND = Backend(
    name="llama.cpp", format="gguf", options=LlamaCppOptions, quants=GGUF_TABLE,
    open_session=_open_session, profile_ops=_profile_ops, export=_export, parent_quant=_parent_quant,
    check_file=_check_file, shipped_files=_shipped_files, uses_gpu=_uses_gpu, check_grid=_check_grid,
    prepare_worker=_prepare_worker, windowed_kv_cache=True, aliases=("llamacpp", "llama-cpp"))
