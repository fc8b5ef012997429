"""`export_onnx(source, quant)`: HF -> ONNX through optimum, then ONNX Runtime's own quantizers, all cached.

The fp32 parent comes from optimum's `text-generation-with-past` exporter (inputs `input_ids`,
`attention_mask`, `position_ids`, `past_key_values.*`; outputs `logits`, `present.*`). One edit follows:
the language-model head is applied to the last position only, as llama.cpp does, so prefill does not
spend a [batch, prompt, vocab] matmul and buffer on logits nobody reads. Variants are then made from the
fp32 parent with ONNX Runtime's tools: dynamic int8 (weights int8, activations quantized per call),
4-bit weight-only `MatMulNBits` (block size 32 unless named, e.g. `int4-b128`) and fp16.

Each variant is a folder optimum can also load (`model.onnx`, `model.onnx.data`, `config.json`), so the
benchmark against optimum's own generate loop uses exactly the same file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

from edgeprof import __version__
from edgeprof.errors import ArtifactError, BackendUnavailableError, QuantError
from edgeprof.export.artifacts import (KV_CACHE_METADATA, Artifact, artifact_path, describe_files,
                                       user_file_artifact)
from edgeprof.models.source import ModelSource
from edgeprof.quant.onnx import OnnxQuant, onnx_quant  # noqa: F401 - onnx_quant: callers' old path
from edgeprof.export.gguf_export import source_key
from edgeprof.export.onnx_gptq import inc_gptq_replaced
from edgeprof.texts import read_fidelity_text

Progress = Callable[[str, int, int], None]

MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
# tokenizer.json travels with the ONNX files: fidelity tokenizes its text with it (ONNX Runtime has none)
_HF_SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")
EXPORT_INSTALL_HINT = "pip install 'edgeprof[export]' (optimum-onnx, transformers, torch)"


def require_exporter() -> None:
    """The export extra is optional; say exactly what to install when it is missing."""
    try:
        import optimum.exporters.onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(f"ONNX export needs the export extra ({exc.name} is missing): "
                                      f"{EXPORT_INSTALL_HINT}") from None


def export_onnx(source: ModelSource, quant_name: str, progress: Progress | None = None,
                calibration_text: str | Path | None = None) -> Artifact:
    """Return a cached ONNX artifact of `source` at `quant_name`, making it (and its fp32 parent) if needed.
    `calibration_text`: what int4-gptq calibrates on (None: the default fidelity text)."""
    quant = onnx_quant(quant_name)
    if source.kind == "onnx":
        return existing_onnx(source)
    folder = source.hf_folder()
    calibration = None
    if quant.algorithm == "gptq":
        calibration = read_fidelity_text(calibration_text)
    # one file per calibration text and GPTQ implementation (files of the vendored GPTQ are not reused)
    key = source_key(source, folder) + (f":{calibration.sha256}:{GPTQ_METHOD}" if calibration else "")
    final = artifact_path(key, source.name, "onnx", quant.name, file_name=MODEL_FILE)
    cached = Artifact.read_sidecar(final)
    if cached:
        _add_side_files(folder, final.parent)  # exports made before the tokenizer travelled with them
        return cached
    exporter = f"edgeprof-{__version__}/"
    step = f"onnx {quant.name}"
    if progress:
        progress(step, 0, 1)
    work = final.parent.with_name(final.parent.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        if quant.name == "fp32":
            fused = _export_fp32(folder, work)
            _add_side_files(folder, work)
            exporter += "optimum-onnx+gqa+last-token-lm-head" if fused else "optimum-onnx+last-token-lm-head"
        else:
            parent = export_onnx(source, "fp32", progress)
            with _quiet():
                _quantize(Path(parent.path), work, quant, calibration.text if calibration else None)
            for name in _HF_SIDE_FILES:
                if (Path(parent.path).parent / name).exists():
                    shutil.copy2(Path(parent.path).parent / name, work / name)
            exporter += f"onnxruntime-quantization:{quant.name}"
        shutil.rmtree(final.parent, ignore_errors=True)
        work.rename(final.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if progress:
        progress(step, 1, 1)
    return describe_files(final, payload_files(final), "onnx", quant.name, source.name, exporter,
                          f"- {calibration.sha256} {calibration.path}" if calibration else "")


def _add_side_files(hf_folder: Path, onnx_folder: Path) -> None:
    for name in _HF_SIDE_FILES:
        if (hf_folder / name).exists() and not (onnx_folder / name).exists():
            shutil.copy2(hf_folder / name, onnx_folder / name)


def payload_files(model_file: Path) -> list[Path]:
    """The files that make up an ONNX model: the graph and its external-data file, if any."""
    data = model_file.with_name(DATA_FILE)
    return [model_file, data] if data.exists() else [model_file]


def existing_onnx(source: ModelSource) -> Artifact:
    """A user's ONNX file, checked and described (hashed once; the memo lives in our cache, not beside it)."""
    path = source.path
    check_onnx(path)
    files = [path] + [path.parent / name for name in external_data_files(path)]
    return user_file_artifact(files, source.name, "onnx", lambda: "as-is")


def onnx_parent_quant(quant_name: str) -> str | None:
    """The variant a quantized one was made from (fp32), or None for the parent itself."""
    return None if onnx_quant(quant_name).name == "fp32" else "fp32"


def external_data_files(model_file: Path) -> list[str]:
    """Names of the external-data files a model refers to (read without loading any weights)."""
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    names = set()
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                names.add(entry.value)
    return sorted(names)


def check_onnx(path: Path) -> None:
    """One-line errors for a file that is not ONNX, lacks its external data or has no KV-cache I/O."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for garbage
        raise ArtifactError(f"{path}: not an ONNX model ({type(exc).__name__})") from None
    folder = path.parent.resolve()
    for name in external_data_files(path):
        target = (folder / name).resolve()
        if not target.is_relative_to(folder):
            # followed and hashed, `../../etc/shadow` or `/dev/zero` (which never ends) would be read as weights
            raise ArtifactError(f"{path}: external data location {name!r} leaves the model's folder; refused")
        if not target.exists():
            raise ArtifactError(f"{path}: external data file {name} is missing (it must lie beside the model)")
        if not target.is_file():
            raise ArtifactError(f"{path}: external data location {name!r} is not a regular file; refused")
    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    if "input_ids" not in inputs or "logits" not in outputs:
        raise ArtifactError(f"{path}: not a causal LM export (needs an input_ids input and a logits output)")
    if not any(name.startswith("past_key_values.") for name in inputs) or not any(
            name.startswith("present.") for name in outputs):
        raise ArtifactError(f"{path}: the model has no KV-cache inputs/outputs (past_key_values.*/present.*); "
                            "export it with task text-generation-with-past")


@contextlib.contextmanager
def _quiet():
    """optimum, torch.onnx and the quantizers are chatty (tracer warnings, advice); keep it off the terminal."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


# -- fp32 export -------------------------------------------------------------------------------
def _export_fp32(hf_folder: Path, work: Path) -> bool:
    """optimum's export, then edgeprof's rewrite; True where attention was fused (see `fusable`)."""
    require_exporter()
    from optimum.exporters.onnx import main_export

    raw = work / "optimum"
    config = json.loads((hf_folder / "config.json").read_text())
    task = "text-generation-with-past"
    try:
        with _quiet():
            if _needs_eager_attention(config):
                _export_eager(hf_folder, raw, task)
            else:
                main_export(str(hf_folder), output=str(raw), task=task, device="cpu", do_validation=False)
    except ValueError as exc:
        if "unsupported architecture" not in str(exc):
            raise
        raise ArtifactError(f"optimum's ONNX exporter does not export model_type {config.get('model_type')!r}; "
                            "its GGUF runs on the llama.cpp backend") from None
    fused = fusable(config)
    _rewrite(raw / MODEL_FILE, work / MODEL_FILE, hf_folder, fused)
    for name in _HF_SIDE_FILES:
        if (raw / name).exists():
            shutil.copy2(raw / name, work / name)
    shutil.rmtree(raw)
    return fused


FUSABLE_MODEL_TYPES = ("llama", "mistral", "qwen2")


def _needs_eager_attention(config: dict) -> bool:
    """Transformers' SDPA attention, which optimum traces by default, ignores Gemma 2's attention soft-cap:
    the graph would compute another model (measured on tiny-gemma2: logits 6.7e-3 off the reference, exactly
    what leaving the cap out does; 8.7e-7 off a reference without the cap)."""
    return bool(config.get("attn_logit_softcapping"))


def _export_eager(hf_folder: Path, output: Path, task: str) -> None:
    """optimum's export of the model loaded with eager attention (main_export offers no way to ask for it)."""
    from optimum.exporters.onnx import onnx_export_from_model
    from optimum.exporters.tasks import TasksManager
    from optimum.utils.save_utils import maybe_load_preprocessors

    model = TasksManager.get_model_from_task(task, str(hf_folder), device="cpu", library_name="transformers",
                                             attn_implementation="eager")
    onnx_export_from_model(model, output, task=task, do_validation=False, device="cpu",
                           preprocessors=maybe_load_preprocessors(str(hf_folder)))


def fusable(config: dict) -> bool:
    """Whether the GroupQueryAttention rewrite handles this family. It takes q and k straight from their
    projections and rotates all of every head in every layer with one scale and no cap, which holds for
    Llama, Mistral and Qwen2 only. A family that normalises q/k first (Qwen3, Gemma 3, OLMoE) would lose
    that norm: measured on tiny-qwen3, the fused graph's logits were 51 % off llama.cpp's. Likewise layers
    without rotary (SmolLM3), partial rotary (Phi-3), soft-caps, query_pre_attn_scalar and sliding windows
    (Gemma). Those families keep optimum's own attention (and a concatenating KV cache)."""
    return config.get("model_type") in FUSABLE_MODEL_TYPES


def _rewrite(src: Path, dst: Path, hf_folder: Path, fuse: bool = True) -> None:
    """Fused attention with an in-place KV cache (where `fuse`), the LM head on the last position only, and
    all weights in one external-data file."""
    import onnx
    from onnx import helper

    from edgeprof.export.onnx_gqa import fuse_group_query_attention

    model = onnx.load(str(src))  # with weights, so they are re-saved into DATA_FILE
    if fuse:
        fuse_group_query_attention(model, json.loads((hf_folder / "config.json").read_text()), hf_folder)
        helper.set_model_props(model, {KV_CACHE_METADATA: "shared-buffer"})
    _last_token_head(model, src)
    _save(model, dst)


def _last_token_head(model, src: Path) -> None:
    """Apply the LM head to the last position only: prefill then never builds [batch, prompt, vocab]."""
    from onnx import TensorProto, helper

    graph = model.graph
    head = next((n for n in graph.node if "logits" in n.output), None)
    if head is None:
        raise ArtifactError(f"{src}: the exported graph has no node producing logits")
    hidden = head.input[0]
    consts = {"edgeprof_last_start": -1, "edgeprof_last_end": 2**62, "edgeprof_last_axis": 1}
    for name, value in consts.items():
        graph.initializer.append(helper.make_tensor(name, TensorProto.INT64, [1], [value]))
    sliced = hidden + "_last_token"
    index = list(graph.node).index(head)
    graph.node.insert(index, helper.make_node("Slice", [hidden, *consts], [sliced], name=LAST_TOKEN_NODE))
    head.input[0] = sliced
    logits = next(o for o in graph.output if o.name == "logits")
    logits.type.tensor_type.shape.dim[1].ClearField("dim_param")
    logits.type.tensor_type.shape.dim[1].dim_value = 1


LAST_TOKEN_NODE = "/edgeprof/last_token"


def all_positions_graph(model_file: Path) -> bytes | None:
    """The model's graph with the LM head applied to every position again (fidelity over text scores each
    one): the last-token Slice `_last_token_head` inserted is removed and its consumers read the hidden
    states it sliced. Nothing else changes, so the weights (quantized or not, kept in the external-data
    file) and every position's arithmetic are the artifact's own; the last position's logits are exactly
    what the measured graph computes. None when the graph has no such Slice (a plain optimum export
    already returns every position)."""
    import onnx

    model = onnx.load(str(model_file), load_external_data=False)
    graph = model.graph
    node = next((n for n in graph.node if n.name == LAST_TOKEN_NODE), None)
    if node is None:
        return None
    for consumer in graph.node:
        for i, name in enumerate(consumer.input):
            if name == node.output[0]:
                consumer.input[i] = node.input[0]
    graph.node.remove(node)
    dim = next(o for o in graph.output if o.name == "logits").type.tensor_type.shape.dim[1]
    dim.ClearField("dim_value")
    dim.dim_param = "sequence_length"
    return model.SerializeToString()


def _save(model, dst: Path) -> None:
    import onnx

    onnx.save_model(model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)


# -- quantized variants ------------------------------------------------------------------------
def _quantize(parent: Path, work: Path, quant: OnnxQuant, calibration_text: str | None = None) -> None:
    dst = work / MODEL_FILE
    if quant.name == "int8":
        from onnx import TensorProto
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # Weight matmuls only (MatMulConstBOnly): attention's activation x activation products stay float,
        # as in llama.cpp, so int8 here means what users expect: int8 weights.
        quantize_dynamic(str(parent), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         use_external_data_format=True, extra_options={"MatMulConstBOnly": True,
                                                                    # GQA's outputs carry no inferred type
                                                                    "DefaultTensorType": TensorProto.FLOAT})
        _rename_external_data(dst)
        return
    import onnx

    model = onnx.load(str(parent))
    if quant.name == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(model, keep_io_types=False, disable_shape_infer=True)
    else:
        try:
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        except ImportError as exc:
            raise BackendUnavailableError(f"int4 needs onnx-ir ({exc}): {EXPORT_INSTALL_HINT}") from None
        # GPTQ: edgeprof's own (export/onnx_gptq: the vendored one feeds no error back), asymmetric so that
        # ORT's repacking of its result keeps each group's grid
        quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=quant.block_size,
                                         is_symmetric=quant.algorithm != "gptq", accuracy_level=4,
                                         algo_config=_int4_config(quant, parent, model, calibration_text))
        with inc_gptq_replaced() if quant.algorithm == "gptq" else contextlib.nullcontext():
            quantizer.process()
        model = quantizer.model.model
    _save(model, dst)


GPTQ_METHOD = "edgeprof-gptq-1"  # export/onnx_gptq.gptq, asymmetric
GPTQ_CHUNK_TOKENS = 128  # tokens per calibration sample: GPTQ's Hessian needs rows, not long context
GPTQ_SAMPLES = 16


def _int4_config(quant: OnnxQuant, parent: Path, model, calibration_text: str | None):
    """The MatMulNBits algorithm config: None (ORT's default RTN), HQQ, or GPTQ with a reader over the text.
    For GPTQ, graph inputs no node reads (position_ids, where the rewrite's rotary tables take positions from
    the mask) leave `model`: ORT's GPTQ sorts the graph from its inputs and fails on an unread one."""
    from onnxruntime.quantization import matmul_nbits_quantizer as nbits

    if quant.algorithm == "hqq":
        return nbits.HQQWeightOnlyQuantConfig(block_size=quant.block_size, bits=4)
    if quant.algorithm == "gptq":
        read = {name for node in model.graph.node for name in node.input}
        for item in [i for i in model.graph.input if i.name not in read]:
            model.graph.input.remove(item)
        return nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=_TextReader(parent, model, calibration_text or ""),
                                               block_size=quant.block_size)
    return None


class _TextReader:
    """onnxruntime's CalibrationDataReader over a text: GPTQ_SAMPLES chunks of GPTQ_CHUNK_TOKENS tokens, each
    one prefill from an empty cache (the graph's own inputs: ids, positions, mask, zero-length or zeroed KV).
    ORT copies the reader per pass, so the feeds are built once and replayed."""

    def __init__(self, parent: Path, model, text: str):
        import numpy as np
        from tokenizers import Tokenizer

        ids = Tokenizer.from_file(str(parent.parent / "tokenizer.json")).encode(text, add_special_tokens=False).ids
        n = GPTQ_CHUNK_TOKENS
        chunks = [ids[i * n:(i + 1) * n] for i in range(min(GPTQ_SAMPLES, len(ids) // n))]
        if not chunks:
            raise QuantError(f"int4-gptq: the calibration text has {len(ids)} tokens, fewer than one sample of {n}")
        graph = model.graph
        shared = any(p.key == KV_CACHE_METADATA and p.value == "shared-buffer" for p in model.metadata_props)
        self.feeds = []
        for chunk in chunks:
            feed = {}
            for item in graph.input:
                dims = [d.dim_value for d in item.type.tensor_type.shape.dim]
                if item.name == "input_ids":
                    feed[item.name] = np.asarray([chunk], dtype=np.int64)
                elif item.name == "position_ids":
                    feed[item.name] = np.arange(n, dtype=np.int64)[None, :]
                elif item.name == "attention_mask":
                    feed[item.name] = np.ones((1, n), dtype=np.int64)
                elif item.name.startswith("past_key_values."):  # [1, kv heads, buffer or past length, head dim]
                    feed[item.name] = np.zeros((1, dims[1], n if shared else 0, dims[3]), dtype=np.float32)
            self.feeds.append(feed)
        self._next = iter(self.feeds)

    def get_next(self):
        return next(self._next, None)

    def __iter__(self):
        return iter(self.feeds)

    def rewind(self):
        self._next = iter(self.feeds)


def _rename_external_data(model_file: Path) -> None:
    """quantize_dynamic names its data file after the model; store it under the common DATA_FILE name."""
    import onnx

    names = external_data_files(model_file)
    if names == [DATA_FILE]:
        return
    model = onnx.load(str(model_file))
    for name in names:
        (model_file.parent / name).unlink(missing_ok=True)
    _save(model, model_file)
