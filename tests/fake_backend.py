"""A tiny backend that exists only in the tests: everything a backend registers, in one module, loaded
through `EDGEPROF_BACKENDS=fake_backend` (this folder on the path). It shows that a backend needs nothing
outside its own code: planning, the export child, the worker, records and `--profile-ops` find it in the
registry. Its "model" is a text file; its session counts tokens and does no arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeprof.backends.op_profile import OpProfile, PhaseOps
from edgeprof.backends.registry import Backend
from edgeprof.config import BackendOptions, Hyperparameters
from edgeprof.errors import ConfigError, QuantError
from edgeprof.quant.table import QuantTable

N_VOCAB = 97


@dataclass(frozen=True)
class FakeOptions(BackendOptions):
    fake_knob: int = 1  # a setting no other backend has

    def validate(self) -> "FakeOptions":
        if self.fake_knob < 1:
            raise ConfigError(f"fake knob must be >= 1, got {self.fake_knob}")
        return self


@dataclass(frozen=True)
class FakeQuant:
    name: str


def fake_quant(name: str) -> FakeQuant:
    if name.lower() in ("fq8", "fq4"):
        return FakeQuant(name.lower())
    raise QuantError(f"unknown fake quantization {name!r} (offered: fq8, fq4)")


class FakeSession:
    name = "fake"
    n_vocab = N_VOCAB

    def __init__(self, model_path: str, hp: Hyperparameters):
        if not Path(model_path).read_text().startswith("fake model"):
            raise ConfigError(f"{model_path} is not a fake model")
        self.hp = hp.for_backend(FakeOptions)
        self.options = FakeOptions.of(hp)
        self._last = np.zeros(hp.batch, dtype=np.int32)
        self._position = 0

    def prefill(self, prompts: np.ndarray, start: int = 0) -> None:
        self._last = prompts[:, -1].astype(np.int32)
        self._position = start + prompts.shape[1]

    def decode_step(self) -> None:
        self._last = (self._last + self.options.fake_knob) % N_VOCAB
        self._position += 1

    def last_tokens(self) -> np.ndarray:
        return self._last

    def reset(self) -> None:
        self._position = 0

    def rewind(self, position: int) -> None:
        self._position = min(self._position, position)

    def info(self) -> dict:
        return {"fake_knob": self.options.fake_knob}

    def close(self) -> None:
        pass


def _export(source, quant: str, progress=None, calibration_text=None):
    from edgeprof.export.artifacts import artifact_path, describe

    path = artifact_path(f"fake:{source.spec}:{source.seed}", source.name, "fakefmt", fake_quant(quant).name)
    path.write_text(f"fake model of {source.spec} at {quant}\n")
    return describe(path, "fakefmt", fake_quant(quant).name, source.name, "fake-exporter")


def _profile_ops(model_path: str, hp: Hyperparameters, prompts) -> OpProfile:
    phase = PhaseOps({"ffn": 2.0, "other": 2.0}, {"ffn": 0.5, "other": 0.5}, 4.0, 4.0)
    return OpProfile("fake", "counted, not timed", phase, phase, 1,
                     details={"fake_knob": FakeOptions.of(hp).fake_knob})


BACKEND = Backend(
    name="fake", format="fakefmt", options=FakeOptions, quants=QuantTable("fakefmt", fake_quant, ("fq8",)),
    open_session=lambda path, hp, need_logits=False: FakeSession(path, hp), profile_ops=_profile_ops,
    export=_export, parent_quant=lambda source, quant: None, check_file=lambda path: {},
    shipped_files=lambda artifact: [Path(artifact.path)], aliases=("pretend",), label="FAKE")
