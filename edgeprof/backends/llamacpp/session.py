"""llama.cpp through llama-cpp-python's low-level C API (`llama_batch` / `llama_decode`).

The hot loop is kept as lean as llama-bench's: batches are allocated and laid out once per session,
numpy views write straight into the C buffers (no per-token Python loops over the batch), and greedy
choice happens where the logits are. Where the build has llama.cpp's backend sampling, a greedy sampler
chain per sequence runs the argmax inside the graph (on the GPU when the model is offloaded), so only
token ids come back instead of batch x vocab logits; otherwise (or when a caller needs the logits
themselves: fidelity, parity) it is one numpy `argmax` over a zero-copy view of the logits llama.cpp
already produced. On the device, one argmax covers every sequence (`greedy.BatchedArgmax`), not
one sampler chain per sequence. `info()["sampling"]` says which ran.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from edgeprof.backends.llamacpp.greedy import BatchedArgmax
from edgeprof.backends.llamacpp.options import LlamaCppOptions
from edgeprof.backends.llamacpp.lib import LogCapture, build_info, load_llama_cpp, repack_weights
from edgeprof.config import Hyperparameters
from edgeprof.errors import ArtifactError, BackendUnavailableError, ConfigError
from edgeprof.quant import KV_CACHE_TYPES


def backend_sampling_available(llama_cpp) -> bool:
    """Whether this llama.cpp has backend sampling (`llama_context_params.samplers`, 2026 builds)."""
    return (hasattr(llama_cpp, "llama_sampler_seq_config") and hasattr(llama_cpp, "llama_get_sampled_candidates_ith")
            and any(name == "samplers" for name, *_ in llama_cpp.llama_context_params._fields_)
            and any(name == "backend_apply" for name, *_ in llama_cpp.llama_sampler_i._fields_))


def device_sampling_wins(hp: Hyperparameters) -> bool:
    """Greedy on the device wherever the model is on a GPU and a step's outputs fit one micro-batch: there one
    argmax kernel replaces copying batch x vocab logits to the host and scanning them (docs/benchmarks.md §14:
    H200, batch 1 to 128). On a CPU the logits are already in host memory."""
    options = LlamaCppOptions.of(hp)
    return options.gpu_layers != 0 and BatchedArgmax.fits(hp.batch, options.n_ubatch)


class _Batch:
    """A `llama_batch` with numpy views over its token and position arrays."""

    def __init__(self, llama_cpp, capacity: int):
        self._llama_cpp = llama_cpp
        self.raw = llama_cpp.llama_batch_init(capacity, 0, 1)
        self.tokens = np.ctypeslib.as_array(self.raw.token, shape=(capacity,))
        self.positions = np.ctypeslib.as_array(self.raw.pos, shape=(capacity,))
        self.n_seq_id = np.ctypeslib.as_array(self.raw.n_seq_id, shape=(capacity,))
        self.wants_logits = np.ctypeslib.as_array(self.raw.logits, shape=(capacity,))

    def lay_out(self, seq_ids: np.ndarray, positions: np.ndarray, wants_logits: np.ndarray) -> None:
        """Fix which sequence, position and output flag each slot has (done once, not per step)."""
        n = len(seq_ids)
        self.raw.n_tokens = n
        self.n_seq_id[:n] = 1
        self.positions[:n] = positions
        self.wants_logits[:n] = wants_logits
        for i, seq in enumerate(seq_ids.tolist()):
            self.raw.seq_id[i][0] = seq

    def free(self) -> None:
        self._llama_cpp.llama_batch_free(self.raw)


class LlamaCppModel:
    """Loaded GGUF weights, which several contexts can share (the operator profiler times a plain context
    and an observed one over the same weights, interleaved, without a second copy in memory)."""

    def __init__(self, model_path: str, gpu_layers: int):
        llama_cpp = load_llama_cpp()
        self._llama_cpp = llama_cpp
        self.logs = LogCapture()
        llama_cpp.llama_backend_init()
        if gpu_layers and not llama_cpp.llama_supports_gpu_offload():
            raise BackendUnavailableError(
                "this llama-cpp-python build has no GPU offload; use --gpu-layers 0 or reinstall it with "
                "CMAKE_ARGS=\"-DGGML_CUDA=on\" (see scripts/gpu/README.md)")
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 999 if gpu_layers < 0 else gpu_layers
        model_params.use_extra_bufts = repack_weights()
        self.pointer = llama_cpp.llama_model_load_from_file(model_path.encode(), model_params)
        if not self.pointer:
            raise ArtifactError(f"llama.cpp could not load {model_path}: {self.logs.tail(2) or 'no detail'}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.pointer)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)

    def free(self) -> None:
        """Free the weights; safe to call twice (after every context on them is freed)."""
        if self.pointer:
            self._llama_cpp.llama_model_free(self.pointer)
            self.pointer = None


class LlamaCppSession:
    """A loaded GGUF with a context for `hp.batch` sequences of `hp.context_per_sequence` tokens."""

    name = "llama.cpp"

    def __init__(self, model_path: str, hp: Hyperparameters, need_logits: bool = False, sampling: str = "auto",
                 model: LlamaCppModel | None = None, eval_callback=None):
        """`need_logits`: the caller reads logits (fidelity, parity), so greedy must stay on the host.
        `sampling` (greedy only): "auto" (`device_sampling_wins`), "device" or "host".
        `model`: weights already loaded (borrowed: `close` leaves them loaded); `eval_callback`: a
        `ggml_backend_sched_eval_callback` for the context (the operator profiler's observer)."""
        hp = hp.for_backend(LlamaCppOptions)  # llama.cpp's own settings, its defaults where none was given
        llama_cpp = load_llama_cpp()
        self._llama_cpp = llama_cpp
        self._owns_model = model is None
        self._weights = LlamaCppModel(model_path, hp.gpu_layers) if model is None else model
        self._logs = self._weights.logs
        self.hp = hp
        self._model = self._weights.pointer
        self._vocab = self._weights.vocab
        self.n_vocab = self._weights.n_vocab

        ctx_params = llama_cpp.llama_context_default_params()
        n_ctx = hp.batch * hp.context_per_sequence
        ctx_params.n_ctx = n_ctx
        ctx_params.n_batch = min(hp.n_batch, max(n_ctx, 1))
        ctx_params.n_ubatch = min(hp.n_ubatch, ctx_params.n_batch)
        ctx_params.n_seq_max = hp.batch
        ctx_params.n_threads = hp.threads
        ctx_params.n_threads_batch = hp.threads
        ctx_params.type_k = KV_CACHE_TYPES[hp.kv_type]
        ctx_params.type_v = KV_CACHE_TYPES[hp.kv_type]
        ctx_params.flash_attn_type = {
            "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
            "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
            "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }[hp.flash_attn]
        ctx_params.no_perf = True
        ctx_params.swa_full = False  # a window-sized cache on sliding-window layers, as llama-bench/-cli/-server
        self._eval_callback = eval_callback  # llama.cpp calls it for the context's life: keep it alive
        if eval_callback is not None:
            ctx_params.cb_eval = eval_callback
        self._argmax: BatchedArgmax | None = None
        self._sampler_configs = None
        if hp.sampler == "greedy" and not need_logits and backend_sampling_available(llama_cpp) and (
                sampling == "device" and BatchedArgmax.fits(hp.batch, ctx_params.n_ubatch)
                or sampling == "auto" and device_sampling_wins(hp)):
            self._attach_device_greedy(ctx_params)
        self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            self._free_argmax()
            if self._owns_model:
                self._weights.free()
            raise ConfigError(f"llama.cpp could not create a context for these settings: "
                              f"{self._logs.tail(2) or 'no detail'}")
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._n_batch = ctx_params.n_batch
        self._greedy = hp.sampler == "greedy"
        self._on_device = self._argmax is not None
        self._next = np.zeros(hp.batch, dtype=np.int32)
        self._step = 0
        self._logits = np.empty((0, 0), dtype=np.float32)
        self._logits_address = 0
        self._prefill_batches: dict[tuple[int, int, int], list[tuple[_Batch, np.ndarray, np.ndarray]]] = {}
        # Called as (tokens done, tokens in all) after each llama_decode call of a prefill; the worker sets it
        # only for untimed passes, so the timed prefill does no work beyond llama.cpp's own.
        self.prefill_progress: Callable[[int, int], None] | None = None
        self._decode_batch = _Batch(llama_cpp, hp.batch)
        seqs = np.arange(hp.batch, dtype=np.int32)
        self._decode_batch.lay_out(seqs, np.zeros(hp.batch, dtype=np.int32), np.ones(hp.batch, dtype=np.int8))

    # -- prefill -------------------------------------------------------------------------------
    def _plan_prefill(self, batch: int, prompt_len: int, start: int) -> list[tuple[_Batch, np.ndarray, np.ndarray]]:
        """Split batch x prompt tokens (at positions start..start+prompt_len) into llama_decode calls of at
        most n_batch tokens, laid out once per shape."""
        key = (batch, prompt_len, start)
        if key in self._prefill_batches:
            return self._prefill_batches[key]
        total = batch * prompt_len
        seq_of = np.repeat(np.arange(batch, dtype=np.int32), prompt_len)
        pos_of = np.tile(np.arange(start, start + prompt_len, dtype=np.int32), batch)
        is_last = (pos_of == start + prompt_len - 1).astype(np.int8)
        chunks = []
        for first in range(0, total, self._n_batch):
            stop = min(first + self._n_batch, total)
            chunk = _Batch(self._llama_cpp, stop - first)
            chunk.lay_out(seq_of[first:stop], pos_of[first:stop], is_last[first:stop])
            rows = np.flatnonzero(is_last[first:stop])  # the chunk's tokens that give an output
            chunks.append((chunk, seq_of[first:stop][rows], rows))
        self._prefill_batches[key] = chunks
        return chunks

    def prefill(self, prompts: np.ndarray, start: int = 0) -> None:
        batch, prompt_len = prompts.shape
        chunks = self._plan_prefill(batch, prompt_len, start)
        flat = prompts.reshape(-1)
        done = 0
        for chunk, finished, rows in chunks:
            n = chunk.raw.n_tokens
            chunk.tokens[:n] = flat[done:done + n]
            done += n
            self._decode(chunk.raw)
            if len(finished):
                self._choose(finished, rows)
            if self.prefill_progress is not None:
                self.prefill_progress(done, len(flat))
        self._step = start + prompt_len
        if not self._greedy:
            self._next[:] = prompts[:, -1]
            # Nothing read the logits, so wait here: on a GPU llama_decode returns before the work is done.
            self._llama_cpp.llama_synchronize(self._ctx)

    def kv_cache_bytes_held(self) -> int:
        """Bytes the KV cache holds for the tokens in it now, as llama.cpp would save them
        (`llama_state_seq_get_size` summed over sequences: each cell's K and V rows plus a few bytes of
        position and sequence ids per cell)."""
        size = self._llama_cpp.llama_state_seq_get_size
        return int(sum(size(self._ctx, seq) for seq in range(self.hp.batch)))

    # -- decode --------------------------------------------------------------------------------
    def decode_step(self) -> None:
        batch = self._decode_batch
        batch.tokens[:self.hp.batch] = self._next
        batch.positions[:self.hp.batch] = self._step
        self._decode(batch.raw)
        self._step += 1
        if self._greedy:
            self._choose(None)
        else:
            self._llama_cpp.llama_synchronize(self._ctx)

    def set_sampler(self, sampler: str) -> None:
        """Switch between "greedy" and "none" without reloading (used to compare the two in one context)."""
        self._greedy = sampler == "greedy"

    def _decode(self, raw_batch) -> None:
        status = self._llama_cpp.llama_decode(self._ctx, raw_batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}: {self._logs.tail(2)}")

    def _attach_device_greedy(self, ctx_params) -> None:
        """The batched argmax's chain on sequence 0, given to the context at creation (llama.cpp builds it into
        its graph then); the chain lives as long as the context."""
        llama_cpp = self._llama_cpp
        self._argmax = BatchedArgmax(llama_cpp)
        configs = (llama_cpp.llama_sampler_seq_config * 1)()
        configs[0].seq_id = 0
        configs[0].sampler = ctypes.cast(self._argmax.chain, ctypes.c_void_p)
        self._sampler_configs = configs  # llama.cpp keeps the pointer: keep the array alive
        ctx_params.samplers = configs
        ctx_params.n_samplers = 1

    def _free_argmax(self) -> None:
        if self._argmax is not None:
            self._argmax.free()
            self._argmax = None

    def _choose(self, sequences: np.ndarray | None, rows: np.ndarray | None = None) -> None:
        """Greedy next token for the outputs of the last decode: all sequences (a decode step, where token i
        is sequence i), or `sequences`, whose outputs are the batch's tokens `rows` (a prefill chunk)."""
        if not self._greedy:
            return
        n_out = self.hp.batch if sequences is None else len(sequences)
        if self._on_device and sequences is None:  # a decode step: token i is sequence i's
            self._next[:] = self._argmax.tokens(self._ctx, 0, n_out)
            return
        if self._on_device and sequences[0] == 0:  # sequence 0's prompt ends in this chunk: its token came back
            first = int(self._argmax.tokens(self._ctx, int(rows[0]), 1)[0])
            if n_out > 1:  # the others have no sampler: their raw logits were copied as usual
                self._next[sequences[1:]] = np.argmax(self._logits_view(n_out)[1:], axis=1)
            self._next[0] = first
            return
        logits = self._logits_view(n_out)
        if sequences is None:
            np.argmax(logits, axis=1, out=self._next)
        else:
            self._next[sequences] = np.argmax(logits, axis=1)

    def _logits_view(self, n_out: int) -> np.ndarray:
        """Zero-copy view of the first `n_out` logits rows, rebuilt only when llama.cpp moves its buffer.

        Building a view costs ~6 us, comparable to a small model's whole step on a GPU; the buffer moves
        only when llama.cpp reallocates its outputs, so the address check (~0.5 us) almost always hits.
        """
        pointer = self._llama_cpp.llama_get_logits(self._ctx)
        address = ctypes.addressof(pointer.contents)
        if address != self._logits_address or n_out > len(self._logits):
            self._logits = np.ctypeslib.as_array(pointer, shape=(max(n_out, self.hp.batch), self.n_vocab))
            self._logits_address = address
        return self._logits[:n_out]

    def last_tokens(self) -> np.ndarray:
        return self._next.copy()

    def next_token_logits(self, prompts: np.ndarray) -> np.ndarray:
        """Float32 logits [batch, vocab] for the position after each prompt (fidelity and parity)."""
        batch, prompt_len = prompts.shape
        if batch * prompt_len > self._n_batch:
            raise ConfigError(f"next-token logits need the prompts in one llama_decode call "
                              f"({batch * prompt_len} tokens > n_batch {self._n_batch})")
        self._require_logits()
        self.reset()
        self.prefill(prompts)
        return self._logits_view(batch).copy()

    def position_logits(self, tokens: np.ndarray, first: int = 0) -> np.ndarray:
        """Float32 logits [len(tokens) - first, vocab] of positions first.. of one sequence fed from an empty
        cache (fidelity over text): as llama-perplexity, only those positions ask llama.cpp for outputs, and
        the tokens go in n_batch-sized llama_decode calls."""
        self._require_logits()
        self.reset()
        n = len(tokens)
        out = np.empty((n - first, self.n_vocab), dtype=np.float32)
        batch = _Batch(self._llama_cpp, min(self._n_batch, n))
        try:
            filled = 0
            for start in range(0, n, self._n_batch):
                stop = min(start + self._n_batch, n)
                positions = np.arange(start, stop, dtype=np.int32)
                wanted = (positions >= first).astype(np.int8)
                batch.lay_out(np.zeros(stop - start, dtype=np.int32), positions, wanted)
                batch.tokens[:stop - start] = tokens[start:stop]
                self._decode(batch.raw)
                outputs = int(wanted.sum())
                if outputs:
                    pointer = self._llama_cpp.llama_get_logits(self._ctx)
                    out[filled:filled + outputs] = np.ctypeslib.as_array(pointer, shape=(outputs, self.n_vocab))
                    filled += outputs
        finally:
            batch.free()
        self._step = n
        return out

    def text_tokens(self, text: str) -> tuple[np.ndarray, int | None]:
        """The text's tokens as llama.cpp's tools make them (special tokens added where the vocabulary says,
        none parsed from the text), and the BOS each chunk starts with where the vocabulary adds one."""
        llama_cpp = self._llama_cpp
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            buffer = (llama_cpp.llama_token * capacity)()
            count = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, capacity, True, False)
            if count >= 0:
                break
            capacity = -count
        tokens = np.ctypeslib.as_array(buffer)[:count].astype(np.int32)
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        return tokens, (int(llama_cpp.llama_vocab_bos(self._vocab)) if add_bos else None)

    def logits_of_last_decode(self, n_outputs: int) -> np.ndarray:
        """A copy of the most recent logits rows (for parity tests; never used while timing)."""
        self._require_logits()
        return self._logits_view(n_outputs).copy()

    def _require_logits(self) -> None:
        if self._on_device:
            raise ConfigError("this session samples on the device and keeps no logits; open it with need_logits=True")

    def reset(self) -> None:
        self._llama_cpp.llama_memory_clear(self._memory, True)
        self._step = 0

    def rewind(self, position: int) -> None:
        self._llama_cpp.llama_memory_seq_rm(self._memory, -1, position, -1)
        self._step = position

    def info(self) -> dict:
        llama_cpp = self._llama_cpp
        facts = build_info()
        facts.update({
            "model_parameters": int(llama_cpp.llama_model_n_params(self._model)),
            "model_bytes": int(llama_cpp.llama_model_size(self._model)),
            "n_vocab": int(self.n_vocab),
            "n_ctx": int(llama_cpp.llama_n_ctx(self._ctx)),
            "sampling": ("device" if self._on_device else "host") if self.hp.sampler == "greedy" else "none",
        })
        return facts

    def close(self) -> None:
        """Free native memory; safe to call twice."""
        for chunks in self._prefill_batches.values():
            for chunk, *_ in chunks:
                chunk.free()
        self._prefill_batches.clear()
        if self._decode_batch is not None:
            self._decode_batch.free()
            self._decode_batch = None
        if self._ctx:
            self._llama_cpp.llama_free(self._ctx)
            self._ctx = None
        self._free_argmax()  # after the context that used it
        if self._owns_model:
            self._weights.free()
        self._model = None
