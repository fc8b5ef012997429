"""An importance matrix from llama.cpp's own eval callback, in the file format llama-quantize reads.

What llama.cpp's quantizer wants for each weight W (ggml: ne0 columns = input features): the mean over
calibration tokens of x_j², the squared input activation of column j, so that rounding error is weighted
where inputs are large. llama-imatrix collects it by asking the scheduler for every MUL_MAT whose src[0]
is a `blk.*` weight (and every MUL_MAT_ID, routed experts), then summing src[1]²; this module does the same
through the callback edgeprof's operator profiler already uses (`nodes`' tensor layout, checked
against ggml's accessors), on the same chunking: chunks of C tokens from an empty cache, the first token
replaced by BOS where the vocabulary adds one, every position's logits requested (so the last layer's FFN
sees every row, not only the output rows).

Its file is the GGUF imatrix `llama-imatrix` writes (tensors `<weight>.in_sum2` [ne0 × n_mat] and
`<weight>.counts` [n_mat], general.type = "imatrix", imatrix.datasets / chunk_count / chunk_size), which
`llama-quantize --imatrix` and this llama.cpp's `common_imatrix_load` read (sums / counts = the mean).

Run as a child (`imatrix_child`, which loads llama.cpp before this module's numpy), so a native crash
ends one export, not edgeprof.
"""

from __future__ import annotations

import ctypes
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from edgeprof.backends.llamacpp.nodes import tensor_head

GGML_TYPE_F32 = 0
MIN_ROWS = 16  # llama-imatrix ignores matmuls of fewer than 16 tokens (single-token decode steps)


@dataclass
class WeightStats:
    """Per weight: Σ x² per column for each of its n_mat matrices (float64: the sum over a text of 10⁵
    tokens keeps 1e-12 relative error), and the number of input rows each matrix saw."""

    sums: np.ndarray  # [n_mat, ne0]
    counts: np.ndarray  # [n_mat] int64


@dataclass
class ImatrixCollector:
    """The eval callback's state: asks for weight matmuls, accumulates their inputs' squares."""

    library: object  # the ggml shared library (ggml_get_name, ggml_op_desc)
    stats: dict[str, WeightStats] = field(default_factory=dict)
    _get_name: object = None
    _op_desc: object = None

    def __post_init__(self):
        lib = self.library
        lib.ggml_backend_buffer_is_host.restype, lib.ggml_backend_buffer_is_host.argtypes = ctypes.c_bool, [ctypes.c_void_p]
        lib.ggml_nbytes.restype, lib.ggml_nbytes.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
        lib.ggml_backend_tensor_get.restype = None
        lib.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
        self._get_name = self.library.ggml_get_name
        self._get_name.restype, self._get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        self._op_desc = self.library.ggml_op_desc
        self._op_desc.restype, self._op_desc.argtypes = ctypes.c_char_p, [ctypes.c_void_p]

    def _weight(self, head) -> str:
        # llama-imatrix's filter_tensor_name: a weight copied to another backend is named "DEV#name#n"
        name = self._get_name(head.src[0]).decode(errors="replace")
        parts = name.split("#")
        return parts[1] if len(parts) > 1 else name

    def callback(self, tensor, ask: bool, user_data) -> bool:
        op = self._op_desc(tensor).decode(errors="replace")
        if op not in ("MUL_MAT", "MUL_MAT_ID"):
            return False if ask else True
        head = tensor_head(tensor, self._get_name)
        if ask:
            if op == "MUL_MAT_ID":
                return True
            src1 = tensor_head(head.src[1], self._get_name)
            return (src1.ne[1] >= MIN_ROWS and src1.type == GGML_TYPE_F32
                    and self._weight(head).startswith("blk."))
        try:
            self._accumulate(op, head)
        except Exception as exc:  # an exception must not cross into C: keep it for the caller
            self.stats.setdefault("__error__", WeightStats(np.zeros((0, 0)), np.zeros(0)))
            sys.stderr.write(f"imatrix: {exc}\n")
        return True

    def _accumulate(self, op: str, head) -> None:
        weight = self._weight(head)
        src0 = tensor_head(head.src[0], self._get_name)
        x = self._read(head.src[1], np.float32)  # [ne3, ne2, ne1, ne0]
        ne0 = x.shape[-1]
        if op == "MUL_MAT_ID":
            n_as = src0.ne[2]
            ids = self._read(head.src[2], np.int32)[0, 0]  # [n_tokens, n_used]
            entry = self.stats.setdefault(weight, WeightStats(np.zeros((n_as, ne0)), np.zeros(n_as, np.int64)))
            for slot in range(ids.shape[1]):
                rows = x[0, :, slot % x.shape[2], :].astype(np.float64)  # [n_tokens, ne0]
                experts = ids[:, slot]
                np.add.at(entry.sums, experts, rows * rows)
                np.add.at(entry.counts, experts, 1)
            return
        n_mat = src0.ne[2] * src0.ne[3]
        entry = self.stats.setdefault(weight, WeightStats(np.zeros((n_mat, ne0)), np.zeros(n_mat, np.int64)))
        squares = np.square(x.astype(np.float64)).sum(axis=2)  # [ne3, ne2, ne0]
        if n_mat == 1:
            entry.sums[0] += squares.sum(axis=(0, 1))
        else:  # a 3D weight: activation matrix (i3, i2) goes to weight matrix (i3 % ne3, i2 % ne2)
            for i3 in range(squares.shape[0]):
                for i2 in range(squares.shape[1]):
                    entry.sums[(i3 % src0.ne[3]) * src0.ne[2] + i2 % src0.ne[2]] += squares[i3, i2]
        entry.counts += x.shape[0] * x.shape[1] * x.shape[2] // n_mat


    def _read(self, tensor: int, dtype) -> np.ndarray:
        """A tensor's values [ne3, ne2, ne1, ne0]: a view of host memory, or (a GPU buffer, as llama-imatrix
        does) a copy through ggml_backend_tensor_get."""
        head = tensor_head(tensor, self._get_name)
        if not head.buffer or self.library.ggml_backend_buffer_is_host(head.buffer):
            return _view(head, dtype)
        raw = np.empty(self.library.ggml_nbytes(tensor), dtype=np.uint8)
        self.library.ggml_backend_tensor_get(tensor, raw.ctypes.data, 0, raw.size)
        shape = tuple(int(n) for n in reversed(head.ne))
        strides = tuple(int(b) for b in reversed(head.nb))
        return np.ndarray(shape, dtype=dtype, buffer=raw, strides=strides)


def _view(head, dtype) -> np.ndarray:
    """A numpy view [ne3, ne2, ne1, ne0] of a host tensor through its byte strides."""
    shape = tuple(int(n) for n in reversed(head.ne))
    strides = tuple(int(s) for s in reversed(head.nb))
    span = sum((n - 1) * s for n, s in zip(shape, strides)) + np.dtype(dtype).itemsize
    buffer = (ctypes.c_char * span).from_address(head.data)
    return np.ndarray(shape, dtype=dtype, buffer=buffer, strides=strides)


@dataclass(frozen=True)
class ImatrixResult:
    stats: dict[str, WeightStats]
    chunks: int
    chunk_tokens: int


def collect(model_path: str, text: str, chunk_tokens: int = 512, threads: int = 0,
            max_chunks: int = 0) -> ImatrixResult:
    """Run the text through the model in chunks of `chunk_tokens` (as llama-imatrix -c C -b C) and return
    each `blk.*` weight's Σ x² and counts. `max_chunks` 0: every whole chunk of the text."""
    from edgeprof.errors import ConfigError

    def chunks_of(session) -> list[np.ndarray]:
        tokens, bos = session.text_tokens(text)
        n_chunks = len(tokens) // chunk_tokens
        if max_chunks:
            n_chunks = min(n_chunks, max_chunks)
        if n_chunks < 1:
            raise ConfigError(f"the calibration text has {len(tokens)} tokens, fewer than one chunk of "
                              f"{chunk_tokens}; give a longer text")
        chunks = [tokens[i * chunk_tokens:(i + 1) * chunk_tokens].copy() for i in range(n_chunks)]
        if bos is not None:
            for chunk in chunks:
                chunk[0] = bos
        return chunks

    return collect_chunks(model_path, chunks_of, chunk_tokens, threads)


def collect_chunks(model_path: str, chunks_of, chunk_tokens: int, threads: int = 0,
                   kv_type: str = "f16") -> ImatrixResult:
    """The collector over the token chunks `chunks_of(session)` returns, each fed from an empty cache with
    every position's logits requested. `kv_type`: f16 as llama-imatrix (f32 for exact comparisons)."""
    from edgeprof.backends.llamacpp.session import LlamaCppSession
    from edgeprof.backends.llamacpp.lib import load_llama_cpp
    from edgeprof.config import Hyperparameters

    llama_cpp = load_llama_cpp()
    collector = ImatrixCollector(llama_cpp.llama_cpp._lib)
    callback = llama_cpp.ggml_backend_sched_eval_callback(collector.callback)
    hp = Hyperparameters(prompt_tokens=chunk_tokens, gen_tokens=0, context=chunk_tokens, sampler="none",
                         threads=threads or (os.cpu_count() or 1), n_batch=chunk_tokens, n_ubatch=chunk_tokens, flash_attn="off", kv_type=kv_type)
    session = LlamaCppSession(model_path, hp, need_logits=True, eval_callback=callback)
    try:
        chunks = chunks_of(session)
        for chunk in chunks:
            session.position_logits(np.asarray(chunk, dtype=np.int32), 0)
    finally:
        session.close()
    if "__error__" in collector.stats:
        raise RuntimeError("the importance-matrix callback failed (see stderr)")
    return ImatrixResult(collector.stats, len(chunks), chunk_tokens)


def write_imatrix_gguf(path: str, result: ImatrixResult, dataset: str) -> None:
    """Write llama-imatrix's GGUF format (tensor names sorted, as it sorts them)."""
    import gguf

    writer = gguf.GGUFWriter(path, arch="imatrix", use_temp_file=False)
    writer.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)  # llama-imatrix writes no architecture key
    writer.add_string(gguf.Keys.General.TYPE, "imatrix")
    writer.add_array("imatrix.datasets", [dataset])
    writer.add_uint32("imatrix.chunk_count", result.chunks)
    writer.add_uint32("imatrix.chunk_size", result.chunk_tokens)
    for name in sorted(result.stats):
        entry = result.stats[name]
        writer.add_tensor(f"{name}.in_sum2", entry.sums.astype(np.float32))
        writer.add_tensor(f"{name}.counts", entry.counts.astype(np.float32).reshape(-1, 1))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_imatrix(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`{weight: (Σ x² [n_mat, ne0], counts [n_mat])}` of a GGUF imatrix (ours or llama-imatrix's)."""
    import gguf

    reader = gguf.GGUFReader(path)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for tensor in reader.tensors:
        name = tensor.name
        data = np.array(tensor.data, dtype=np.float32)
        if name.endswith(".in_sum2"):
            sums[name.removesuffix(".in_sum2")] = data.reshape(-1, int(tensor.shape[0]))
        elif name.endswith(".counts"):
            counts[name.removesuffix(".counts")] = data.reshape(-1)
    return {name: (sums[name], counts[name]) for name in sums if name in counts}


def imatrix_means(path: str) -> dict[str, np.ndarray]:
    """What llama-quantize hands the quantizer: Σ x² / count per matrix (1 where a matrix saw no rows)."""
    means = {}
    for name, (sums, counts) in read_imatrix(path).items():
        values = np.ones_like(sums)
        seen = counts > 0
        values[seen] = sums[seen] / counts[seen, None].astype(np.float32)
        means[name] = values.reshape(-1).astype(np.float32)
    return means
