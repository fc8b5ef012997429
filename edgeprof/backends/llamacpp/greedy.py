"""Greedy choice for every sequence of a llama_decode call as one argmax inside llama.cpp's graph.

llama.cpp's backend sampling (2026 builds) lets a sampler chain add ggml ops to the decode graph, but it
is per sequence: its own greedy sampler puts one argmax and one device-to-host copy per sequence into every
step. Measured on an H200 (Llama-3.2-1B q4_k_m, docs/benchmarks.md §14), that cost 16 % of decode speed at
batch 16 and 44 % at batch 128; the host argmax over batch x vocab logits cost 13 % and 38 %.

`BatchedArgmax` is a sampler of edgeprof's own (llama.cpp's `llama_sampler_i`, callbacks through ctypes)
attached to sequence 0 only. Its `backend_apply` receives sequence 0's row of the step's logits, a view of
the whole [vocab, outputs + 1] logits tensor llama.cpp pads for sampling, and puts one `ggml_argmax` over
that whole tensor into the graph: one kernel gives every output's token, copied back as sequence 0's
"candidates" (token ids, at most vocab of them). The callbacks run only when llama.cpp builds a graph; a
reused graph (every decode step of one shape) calls no Python at all.

Rows of the argmax follow the micro-batch's outputs, which are the batch's in order while the outputs fit
one micro-batch (`fits`): sequence i's token is element i in a decode step. In a prefill, sequence 0's
output is the first output of its micro-batch (its prompt comes first), so its token is element 0; the
other sequences' outputs have no sampler, so llama.cpp copies their raw logits to the host as before and
the host argmax picks theirs.
"""

from __future__ import annotations

import ctypes

import numpy as np

from edgeprof.backends.llamacpp.nodes import TensorHead


class BatchedArgmax:
    """The sampler chain to attach to sequence 0, and reading the tokens it chose."""

    NAME = b"edgeprof-batched-argmax"

    def __init__(self, llama_cpp):
        self._llama_cpp = llama_cpp
        library = llama_cpp.llama_cpp._lib  # ggml's symbols resolve through libllama's dependencies
        self._argmax = library.ggml_argmax
        self._argmax.restype, self._argmax.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_void_p]
        self._set_name = library.ggml_set_name
        self._set_name.restype, self._set_name.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]
        lc = llama_cpp
        # The callbacks are attributes: llama.cpp calls them as long as the context lives.
        self._callbacks = {
            "name": lc.llama_sampler_i_name(lambda smpl: self.NAME),
            "apply": lc.llama_sampler_i_apply(self._apply_on_host),
            "backend_init": lc.llama_sampler_i_backend_init(lambda smpl, buft, n_outputs: True),
            "backend_apply": lc.llama_sampler_i_backend_apply(self._apply_in_graph),
        }
        self._iface = lc.llama_sampler_i(**self._callbacks)  # the other entries stay NULL, as llama.h allows
        sampler = lc.llama_sampler_init(ctypes.byref(self._iface), None)
        self.chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        self._view = np.empty(0, dtype=np.int32)
        self._view_address = 0
        lc.llama_sampler_chain_add(self.chain, sampler)  # the chain owns (and frees) the sampler

    def _apply_in_graph(self, smpl, ctx, graph, data) -> None:
        """Argmax over every output row: the padded logits tensor that sequence 0's row is a view of. The
        chain's own probe (a lone logits tensor, no view) gets the argmax of that tensor."""
        row = data.contents.logits
        head = TensorHead.from_address(row)
        whole = head.view_src if head.view_src and TensorHead.from_address(head.view_src).ne[0] == head.ne[0] \
            else row
        chosen = self._argmax(ctx, whole)
        self._set_name(chosen, self.NAME)
        data.contents.candidates = chosen

    @staticmethod
    def _apply_on_host(smpl, cur_p) -> None:
        """llama.cpp's CPU sampling path (never used by edgeprof, required by the interface): the argmax."""
        array = cur_p.contents
        array.selected = max(range(array.size), key=lambda i: array.data[i].logit, default=-1)

    @staticmethod
    def fits(batch: int, n_ubatch: int) -> bool:
        """Whether a decode step's outputs fit one micro-batch (the argmax covers one micro-batch)."""
        return batch <= n_ubatch

    def tokens(self, ctx, batch_index: int, n: int) -> np.ndarray:
        """The first `n` tokens the argmax chose in the micro-batch of the output at `batch_index`
        (sequence 0's output in the last llama_decode call). A view, valid until the next decode; rebuilt
        only when llama.cpp moves its buffer (building one costs microseconds, a GPU step about a
        millisecond)."""
        pointer = self._llama_cpp.llama_get_sampled_candidates_ith(ctx, batch_index)
        if not pointer:
            raise RuntimeError("llama.cpp returned no tokens from the batched argmax")
        address = ctypes.addressof(pointer.contents)
        if address != self._view_address or n > len(self._view):
            self._view = np.ctypeslib.as_array(pointer, shape=(n,))
            self._view_address = address
        return self._view[:n]

    def free(self) -> None:
        """Free the chain (and its sampler); after the context that used it."""
        if self.chain:
            self._llama_cpp.llama_sampler_free(self.chain)
            self.chain = None
