"""Turn a model spec string into something an exporter or backend can use.

Specs: `synth:<preset>` (a random-weight checkpoint made on demand), a local HF folder
(config.json + safetensors), a `.gguf` or `.onnx` file used as given, or a Hugging Face Hub id
(`org/repo`, `org/repo-GGUF:Q4_K_M`; see `edgeprof.models.hub`), fetched through huggingface_hub's cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgeprof.errors import ModelSpecError
from edgeprof.models import hub
from edgeprof.models.architecture import Architecture
from edgeprof.models.gguf_facts import read_gguf_facts
from edgeprof.models.presets import Preset, get_preset
from edgeprof.models.synth import ensure_synth
from edgeprof.models.trained import TRAINED_PREFIX, trained_model_folder

SYNTH_PREFIX = "synth:"


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: what the user named, what kind of thing it is, and where it lies."""

    spec: str
    kind: str  # "synth", "hf", "gguf" or "onnx"
    name: str  # stable identity used in config ids (the same on every device)
    path: Path | None  # the HF folder or GGUF file; None for synth until materialised
    preset: Preset | None = None
    architecture: Architecture | None = None
    seed: int = 0
    hub: dict | None = None  # a Hub spec's repository, requested revision, resolved commit and file

    @property
    def is_gguf(self) -> bool:
        return self.kind == "gguf"

    @property
    def is_file(self) -> bool:
        """A ready model file (GGUF or ONNX): run as given, on the backend that reads its format."""
        return self.kind in ("gguf", "onnx")

    def gguf_facts(self):
        """What a GGUF file's metadata says about its model (`gguf_facts.GgufFacts`); GGUF sources only."""
        if not self.is_gguf:
            raise ModelSpecError(f"{self.spec} is not a GGUF file")
        return read_gguf_facts(self.path)

    def hf_folder(self) -> Path:
        """The HF checkpoint folder, writing the synth model into the cache first if needed."""
        if self.kind == "synth":
            return ensure_synth(self.preset, self.seed)
        if self.kind == "hf":
            return self.path
        raise ModelSpecError(f"{self.spec} is already a {self.kind.upper()} file; there is no HF checkpoint to export")


def resolve(spec: str, seed: int = 0, download: bool = True, hub_commit: str | None = None) -> ModelSource:
    """Resolve a spec string; anything unusable is a one-line `ModelSpecError`.

    `download=False` (analysis of recorded runs): a Hub id comes from the local cache alone, at `hub_commit`
    where the run recorded one, and is a ModelSpecError where the cache does not hold it."""
    if spec.startswith(SYNTH_PREFIX):
        preset = get_preset(spec[len(SYNTH_PREFIX):])
        name = f"synth:{preset.name}" + (f"@seed{seed}" if seed else "")
        return ModelSource(spec, "synth", name, None, preset, preset.architecture, seed)
    if spec.startswith(TRAINED_PREFIX):  # a model trained here and shipped with edgeprof (models/trained.py)
        folder = trained_model_folder(spec[len(TRAINED_PREFIX):])
        config = read_json(folder / "config.json", "edgeprof's trained model; scripts/train_stdlib_model.py makes it")
        return ModelSource(spec, "hf", f"trained:{folder.name}", folder, None, Architecture.from_hf_config(config))
    path = Path(spec).expanduser()
    if not path.exists():
        ref = hub.parse_hub_spec(spec)
        if ref is not None:
            return _from_hub(spec, hub.fetch(ref) if download else hub.find_cached(ref, hub_commit))
        raise ModelSpecError(f"no such file or folder: {spec} (for a synthetic model use synth:<preset>, for "
                             "the Hugging Face Hub org/repo or org/repo-GGUF:Q4_K_M; `edgeprof models` lists presets)")
    if path.is_dir():
        config = read_json(path / "config.json", "expected a Hugging Face checkpoint")
        architecture = Architecture.from_hf_config(config)
        return ModelSource(spec, "hf", f"hf:{path.resolve().name}", path.resolve(), None, architecture)
    if path.suffix.lower() == ".gguf" or _has_gguf_magic(path):
        return ModelSource(spec, "gguf", f"gguf:{path.name}", path.resolve())
    if path.suffix.lower() == ".onnx":
        return ModelSource(spec, "onnx", f"onnx:{path.name}", path.resolve())
    raise ModelSpecError(f"{spec}: not a GGUF or ONNX file, nor a Hugging Face folder")


def _from_hub(spec: str, model: hub.HubModel) -> ModelSource:
    """A Hub id's file or folder in the huggingface_hub cache: a GGUF file or a checkpoint folder.
    A GGUF is identified by its content like any file; a checkpoint by repository and commit, so the same
    files give the same config id on every device."""
    if model.filename is not None:
        return ModelSource(spec, "gguf", f"hub:{model.repo}/{model.filename}", model.path, hub=model.record())
    config = read_json(model.path / "config.json", "expected a Hugging Face checkpoint")
    return ModelSource(spec, "hf", f"hub:{model.repo}@{model.commit[:12]}", model.path, None,
                       Architecture.from_hf_config(config), hub=model.record())


def read_json(path: Path, why_needed: str) -> dict:
    """A JSON file of a checkpoint folder, or a one-line `ModelSpecError` saying what is wrong."""
    if not path.is_file():
        raise ModelSpecError(f"{path.parent}: no {path.name} ({why_needed})")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"{path}: not readable JSON ({exc})") from None


def _has_gguf_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False
