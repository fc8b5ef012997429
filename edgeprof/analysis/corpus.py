"""The public measurement corpus (`data/published/*.jsonl`): published llama-bench figures, one per line.

Each row is one figure someone else measured and published (a pp or tg number), with the device it ran on,
the model, quantization, test and the source URL. The device models (`analysis.device_classes`) are fitted
on it and validated leave-one-device-out, so every row must say where it comes from and must resolve to a
model shape and a quantization the roofline knows. A malformed row is one `CorpusError` naming file:line.

Rows the sources themselves leave uncertain stay in the corpus but out of the fit (`CorpusRow.unusable`):
a `doubt` the gatherer wrote (such a row may lack its quantization or model shape, and must say why), or a test the roofline does not
model (anything but ppN, tgN, ppN+tgM, optionally @dDEPTH).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgeprof.models.architecture import Architecture
from edgeprof.catalog import catalog_dirs
from edgeprof.hardware.devices import DEVICE_CLASSES
from edgeprof.errors import CatalogError, EdgeprofError
from edgeprof.models.presets import get_preset
from edgeprof.quant import GGUF_QUANTS

CPU_CLASSES = ("arm-cpu", "apple-cpu", "x86-cpu")
BACKENDS = ("CPU", "CUDA", "Metal", "Vulkan", "ROCm", "SYCL", "OpenCL")
REQUIRED_KEYS = ("device", "device_name", "device_class", "variant", "backend", "build", "date", "model",
                 "model_params_b", "preset", "model_shape", "quant", "model_size_gib", "test", "threads",
                 "n_gpu_layers", "flash_attn", "value_tps", "stdev_tps", "source_url", "source_note", "doubt")
SHAPE_KEYS = ("layers", "hidden", "ffn", "heads", "kv_heads", "vocab")
_TEST = re.compile(r"^(?:pp(?P<pp>\d+)(?:\+tg(?P<pg>\d+))?|tg(?P<tg>\d+))(?:@d(?P<depth>\d+))?$")


class CorpusError(CatalogError):
    """A corpus row that is malformed: the message names file:line and the field."""


@dataclass(frozen=True)
class Test:
    """A llama-bench test: `prompt` tokens prefilled, then `gen` tokens decoded, after `depth` tokens already in
    the KV cache. The figure is (prompt + gen) tokens over the time of both (llama-bench's t/s)."""

    prompt: int
    gen: int
    depth: int = 0

    @property
    def phase(self) -> str:
        """"prefill", "decode" or "both" (a ppN+tgM test)."""
        return "both" if self.prompt and self.gen else "prefill" if self.prompt else "decode"


def parse_test(name: str) -> Test | None:
    """`pp512` -> Test(512, 0); `tg128` -> Test(0, 128); `pp4096+tg128`; `tg128@d4096`; else None."""
    match = _TEST.match(name or "")
    if not match:
        return None
    return Test(int(match["pp"] or 0), int(match["tg"] or match["pg"] or 0), int(match["depth"] or 0))


@dataclass(frozen=True)
class CorpusRow:
    """One published figure. `value_tps` is tokens per second as published; `where` is file:line."""

    where: str
    device: str
    device_class: str
    backend: str
    model: str
    preset: str | None
    model_shape: dict | None
    quant: str | None
    test_name: str
    threads: int | None
    n_gpu_layers: int | None
    value_tps: float
    source_url: str
    source_note: str
    doubt: str | None
    raw: dict = field(compare=False, repr=False)

    @property
    def test(self) -> Test | None:
        return parse_test(self.test_name)

    @property
    def unusable(self) -> str:
        """Why the fit leaves this row out ("" = it uses it)."""
        if self.doubt:
            return f"doubtful: {self.doubt}"
        if self.quant is None:
            return "quantization not stated"
        if self.preset is None and self.model_shape is None:
            return "model shape not stated"
        if self.test is None:
            return f"test {self.test_name!r} is not modelled"
        return ""

    def architecture(self) -> Architecture:
        """The model's shape: its preset's, or the row's explicit `model_shape` as a Llama-style decoder."""
        return self._architecture

    @functools.cached_property
    def _architecture(self) -> Architecture:  # reading the preset catalog once per row, not per use
        if self.preset:
            return get_preset(self.preset).architecture
        return shape_architecture(self.model_shape or {})


def shape_architecture(shape: dict) -> Architecture:
    """A Llama-style architecture from a corpus `model_shape` (layers, hidden, ffn, heads, kv_heads, vocab)."""
    return Architecture.from_hf_config({
        "model_type": "llama", "hidden_size": shape["hidden"], "intermediate_size": shape["ffn"],
        "num_hidden_layers": shape["layers"], "num_attention_heads": shape["heads"],
        "num_key_value_heads": shape["kv_heads"], "vocab_size": shape["vocab"], "tie_word_embeddings": False})


def corpus_dir() -> Path:
    """The corpus folder: the checkout's (or wheel's) `data/published`."""
    for folder in reversed(catalog_dirs("data")):
        if (folder / "published").is_dir():
            return folder / "published"
    raise CorpusError("no data/published folder found (the corpus ships with the source checkout)")


def load_corpus(folder: Path | None = None) -> list[CorpusRow]:
    """Every row of every `*.jsonl` in `folder` (default: the shipped corpus), validated, in file order."""
    folder = folder or corpus_dir()
    rows, presets = [], {}
    for path in sorted(folder.glob("*.jsonl")):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                rows.append(parse_row(line, f"{path.name}:{number}", presets))
    return rows


def parse_row(line: str, where: str, presets: dict | None = None) -> CorpusRow:
    """One JSONL line as a validated `CorpusRow`; anything malformed is a `CorpusError` naming `where`.
    `presets` caches preset architectures across the rows of one load (each lookup reads the catalog)."""
    def fail(message: str) -> CorpusError:
        return CorpusError(f"{where}: {message}")

    try:
        data = json.loads(line)
    except ValueError as exc:
        raise fail(f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise fail("expected a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise fail(f"missing field(s) {', '.join(missing)} (null where the source does not say)")
    url = data["source_url"]
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise fail(f"field 'source_url' must be the source's URL, got {url!r}")
    if not isinstance(data["source_note"], str) or not data["source_note"].strip():
        raise fail("field 'source_note' must say where in the source the figure stands")
    if data["device_class"] not in DEVICE_CLASSES:
        raise fail(f"field 'device_class' must be one of {', '.join(DEVICE_CLASSES)}, got {data['device_class']!r}")
    if data["backend"] not in BACKENDS:
        raise fail(f"field 'backend' must be one of {', '.join(BACKENDS)}, got {data['backend']!r}")
    if not isinstance(data["device"], str) or not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", data["device"]):
        raise fail(f"field 'device' must be a lowercase slug, got {data['device']!r}")
    quant = data["quant"]
    if quant is None and not data["doubt"]:
        raise fail("field 'quant' is null but 'doubt' does not say so: a row without its quantization "
                   "must be marked doubtful")
    if quant is not None and quant not in GGUF_QUANTS:
        raise fail(f"field 'quant' {quant!r} is not a llama.cpp type edgeprof knows ({', '.join(GGUF_QUANTS)})")
    value = data["value_tps"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise fail(f"field 'value_tps' must be a number > 0, got {value!r}")
    row = CorpusRow(where, data["device"], data["device_class"], data["backend"], str(data["model"]),
                    data["preset"], data["model_shape"], quant, str(data["test"]), data["threads"],
                    data["n_gpu_layers"], float(value), url, data["source_note"], data["doubt"] or None, data)
    if presets is not None and row.preset in presets:
        row.__dict__["_architecture"] = presets[row.preset]  # the cached_property's slot
    _check_model(row, fail)
    if presets is not None and row.preset and row.preset not in presets:
        presets[row.preset] = row.architecture()
    return row


def _check_model(row: CorpusRow, fail) -> None:
    if row.preset is None and row.model_shape is None and row.doubt:
        return  # a doubtful row whose source does not give the shape: kept, never fitted (`unusable`)
    if row.preset is None:
        shape = row.model_shape
        if not isinstance(shape, dict) or any(not isinstance(shape.get(k), int) or shape[k] <= 0 for k in SHAPE_KEYS):
            raise fail(f"no 'preset', so 'model_shape' must give {', '.join(SHAPE_KEYS)} as whole numbers")
    try:
        row.architecture()
    except EdgeprofError as exc:
        raise fail(f"model does not resolve: {exc}") from None
