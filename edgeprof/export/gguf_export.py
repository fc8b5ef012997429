"""`export(source, quant)` for GGUF: HF -> f32/f16 GGUF -> llama.cpp's own quantizer, all cached."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import gguf

from edgeprof import __version__
from edgeprof.errors import QuantError
from edgeprof.export.artifacts import Artifact, artifact_path, describe, partial_path, user_file_artifact
from edgeprof.export.gguf_check import check_gguf
from edgeprof.export.gguf_convert import convert_hf_to_gguf
from edgeprof.lifetime import child_env
from edgeprof.quant.gguf import GGUF_QUANTS, GgufQuant, gguf_quant  # noqa: F401 - gguf_quant: callers' old path
from edgeprof.models.source import ModelSource
from edgeprof.export.imatrix import ensure_imatrix

Progress = Callable[[str, int, int], None]  # (step description, done, total)


def source_key(source: ModelSource, folder: Path) -> str:
    """Identity of the checkpoint's content, cheap to compute (no hashing of weights)."""
    parts = [(folder / "config.json").read_text()]
    for file in sorted(folder.glob("*.safetensors")) + [folder / "tokenizer.json"]:
        if file.exists():
            stat = file.stat()
            parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    if source.kind == "synth":
        parts = [folder.name]  # the synth folder name already hashes config, dtype and seed
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def export_gguf(source: ModelSource, quant_name: str, threads: int | None = None,
                progress: Progress | None = None, calibration_text: str | Path | None = None) -> Artifact:
    """Return a cached GGUF artifact of `source` at `quant_name`, making it (and its parent) if needed.
    `calibration_text`: the text an importance-matrix quantization (IQ types, `-imat`) is calibrated on
    (None: the default fidelity text); other quantizations ignore it."""
    quant = gguf_quant(quant_name)
    if source.is_gguf:
        return _existing_gguf(source)
    folder = source.hf_folder()
    key = source_key(source, folder)
    final = artifact_path(key, source.name, "gguf", quant.name)
    cached = Artifact.read_sidecar(final)
    if cached:
        return cached
    if not quant.needs_quantizer:
        tmp = partial_path(final)
        try:
            convert_hf_to_gguf(folder, source.architecture, tmp, quant.name, source.name,
                               on_tensor=lambda d, t: progress and progress(f"convert {quant.name}", d, t))
            tmp.replace(final)
        finally:
            tmp.unlink(missing_ok=True)
        return describe(final, "gguf", quant.name, source.name, f"edgeprof-{__version__}/convert")
    parent = export_gguf(source, gguf_parent_quant(source, quant.name), threads, progress)
    imatrix = None
    if quant.imatrix:
        if progress:
            progress("importance matrix", 0, 1)
        imatrix = ensure_imatrix(Path(parent.path), parent.sha256, calibration_text, threads)
        final = final.with_name(f"{final.stem}.{imatrix.sha256[:12]}{final.suffix}")  # one file per matrix
        cached = Artifact.read_sidecar(final)
        if cached:
            return cached
    if progress:
        progress(f"quantize {quant.name}", 0, 1)
    quantize_gguf(Path(parent.path), final, quant, threads, imatrix.path if imatrix else None)
    if progress:
        progress(f"quantize {quant.name}", 1, 1)
    return describe(final, "gguf", quant.name, source.name, f"edgeprof-{__version__}/llama_model_quantize",
                    imatrix.label if imatrix else "")


def gguf_parent_quant(source: ModelSource, quant_name: str) -> str | None:
    """The unquantized GGUF a quantization is made from (and judged against), or None for that parent itself.

    Quantize from f16 only when the checkpoint is f16 (exact); bf16/f32 checkpoints go through f32."""
    config = json.loads((source.hf_folder() / "config.json").read_text())
    stored = config.get("torch_dtype") or config.get("dtype")  # transformers >= 4.56 writes "dtype"
    parent = "f16" if stored == "float16" else "f32"
    return None if gguf_quant(quant_name).name == parent else parent


def quantize_gguf(src: Path, dst: Path, quant: GgufQuant, threads: int | None = None,
                  imatrix: Path | None = None) -> None:
    """Run llama.cpp's `llama_model_quantize` into `dst` (atomically), in a child process, with the
    importance matrix file `imatrix` where given. A type that needs one and has none is refused here: llama.cpp
    would abort mid-file (IQ1/IQ2) or quietly write a worse one."""
    if imatrix is None and quant.imatrix:
        raise QuantError(f"{quant.name} needs an importance matrix from calibration text; export it from an HF "
                         f"checkpoint or synth preset (edgeprof makes the matrix; --calibration-text FILE picks the "
                         f"text), or choose a type without one (q4_k_m, q2_k, iq4_xs)")
    tmp = partial_path(dst)
    command = [sys.executable, "-m", "edgeprof.backends.llamacpp.quantize", str(src), str(tmp), quant.name,
               str(threads or os.cpu_count() or 1), *([str(imatrix)] if imatrix else [])]
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=child_env())
        if result.returncode != 0:
            tail = " | ".join(line for line in result.stderr.strip().splitlines()[-3:] if line.strip())
            how = f"signal {-result.returncode}" if result.returncode < 0 else f"exit code {result.returncode}"
            raise QuantError(f"llama.cpp could not quantize to {quant.name} ({how}): {tail or 'no detail'}")
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)


def _existing_gguf(source: ModelSource) -> Artifact:
    """Describe a user's GGUF file (validated, hashed once and remembered in the cache)."""
    metadata = check_gguf(source.path)
    return user_file_artifact([source.path], source.name, "gguf",
                              lambda: _file_type_name(metadata.get("general.file_type")))


def _file_type_name(file_type: int | None) -> str:
    """The quantization name of a GGUF's `general.file_type` (a llama_ftype value, as the gguf package's
    `LlamaFileType` mirrors llama.h: no native library is loaded to name a file)."""
    if file_type is None:
        return "unknown"
    names = {gguf.LlamaFileType[q.ftype_constant.removeprefix("LLAMA_FTYPE_")].value: q.name
             for q in GGUF_QUANTS.values()
             if q.imatrix_required or not q.imatrix}  # the file type, not whether an imatrix made it
    return names.get(int(file_type), f"ftype{file_type}")
