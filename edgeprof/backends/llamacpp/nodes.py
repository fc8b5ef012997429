"""llama.cpp graph nodes: reading one from the scheduler's eval callback, and its operator category.

A node carries llama.cpp's name for what it computes (`Qcur-3`, `ffn_up-3`, `kq_soft_max-3`,
`result_output`, …) and its ggml op. A name alone is not enough: `Qcur-3` names both the q projection
(MUL_MAT) and its rotary embedding (ROPE), and some builders leave nodes unnamed (`node_26`, the output
projection of Qwen2). A weight matmul is therefore categorised by its weight, the GGUF tensor it reads
(`blk.3.attn_q.weight`, `output.weight`), which is exact for every family; the rest by op, then by name.
Views, reshapes and permutes compute nothing and take the category of the node before them.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass

EMPTY_OPS = frozenset({"NONE", "VIEW", "RESHAPE", "PERMUTE", "TRANSPOSE"})
_WEIGHT_OPS = frozenset({"MUL_MAT", "MUL_MAT_ID", "GET_ROWS"})

# GGUF tensor names (`blk.N.<name>.weight`, as in the gguf package's TENSOR_NAMES) of weights read by matmuls.
_WEIGHT_RULES = (
    ("lm_head", re.compile(r"^output$")),
    ("projections", re.compile(r"^attn_(q|k|v|qkv|output|q_a|q_b|kv_a_mqa|kv_b|k_b|v_b|out)$")),
    ("ffn", re.compile(r"^ffn_")),
)
_OP_RULES = {
    "ROPE": "attention", "FLASH_ATTN_EXT": "attention", "SOFT_MAX": "attention", "SET_ROWS": "attention",
    "ARGMAX": "sampling", "ARGSORT": "sampling", "TOP_K": "sampling",
}
# First match wins, on the name without its layer suffix and view markers.
_NAME_RULES = (
    ("lm_head", re.compile(r"^result_output$")),
    ("norms", re.compile(r"^(norm|attn_norm|ffn_norm|result_norm|attn_post_norm|ffn_post_norm|post_attention_norm|"
                         r"[QK]cur_normed|[qk]_norm|attn_q_norm|attn_k_norm)$")),
    ("embedding", re.compile(r"^(embd|inp_embd|inp_scaled)$")),
    ("projections", re.compile(r"^([QKV]cur|attn_out|wqkv|bqkv|qkv)$")),
    ("attention", re.compile(r"^(kq|kq_scaled|kq_soft_max|kq_soft_max_ext|kqv|kqv_out|__fattn__|attn_soft_cap|"
                             r"cache_[kv]_l\d+|[kqv])$")),
    ("other", re.compile(r"^(ffn_inp|l_out|attn_residual|ffn_residual|inp_out_ids)$")),
    ("ffn", re.compile(r"^ffn_")),
)
_LAYER = re.compile(r"-(\d+)$")
_MARKERS = re.compile(r"( \((view|permuted|reshaped|cont|transposed|copy)\))+$")
_BLOCK_WEIGHT = re.compile(r"^blk\.(\d+)\.(.+)\.weight$")


@dataclass(frozen=True)
class Node:
    """What the profiler keeps of one graph node: enough to categorise it and to check a later pass
    sees the same graph."""

    name: str
    op: str
    weight: str  # the GGUF weight a matmul or row lookup reads ("" for none)


@dataclass(frozen=True)
class Categorised:
    category: str | None  # None: an empty op (takes the category of the node before it)
    layer: int | None
    matched: bool  # False: no rule knew this node, it fell to "other"


def base_name(name: str) -> tuple[str, int | None]:
    """`"Qcur-3 (view) (permuted)"` -> `("Qcur", 3)`; `"result_norm"` -> `("result_norm", None)`."""
    name = _MARKERS.sub("", name)
    layer = _LAYER.search(name)
    return (name[:layer.start()], int(layer.group(1))) if layer else (name, None)


def categorize(node: Node) -> Categorised:
    base, layer = base_name(node.name)
    if node.op in EMPTY_OPS:
        return Categorised(None, layer, True)
    if node.weight and node.op in _WEIGHT_OPS:
        if node.weight == "token_embd.weight":  # a row lookup is the embedding; a matmul, the tied lm_head
            return Categorised("embedding" if node.op == "GET_ROWS" else "lm_head", layer, True)
        block = _BLOCK_WEIGHT.match(node.weight)
        role = block.group(2) if block else node.weight.removesuffix(".weight")
        for category, pattern in _WEIGHT_RULES:
            if pattern.match(role):
                return Categorised(category, int(block.group(1)) if block else layer, True)
    if node.op in _OP_RULES:
        return Categorised(_OP_RULES[node.op], layer, True)
    for category, pattern in _NAME_RULES:
        if pattern.match(base):
            return Categorised(category, layer, True)
    if node.op == "GET_ROWS":  # unnamed row selection: the last layer keeps only the rows that give outputs
        return Categorised("other", layer, True)
    return Categorised("other", layer, False)


def categorize_sequence(nodes: list[Node]) -> list[Categorised]:
    """Each node's category, empty ops taking their predecessor's (or "other" at the start)."""
    result: list[Categorised] = []
    previous = "other"
    for node in nodes:
        found = categorize(node)
        if found.category is None:
            found = Categorised(previous, found.layer, True)
        previous = found.category
        result.append(found)
    return result


class TensorHead(ctypes.Structure):
    """The leading fields of ggml.h's `struct ggml_tensor` (GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64,
    GGML_MAX_SRC 10, GGML_MAX_NAME 64); `NodeReader` checks the layout against ggml's own accessor."""

    _fields_ = [
        ("type", ctypes.c_int), ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4), ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16), ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10), ("view_src", ctypes.c_void_p), ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64),
    ]


class NodeReader:
    """Reads a node's name, op and weight through ggml's exported functions; the weight (the first source's
    name) through the struct layout above, used only after it proved right on a real node."""

    def __init__(self, library):
        self._get_name = library.ggml_get_name
        self._get_name.restype, self._get_name.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        self._op_desc = library.ggml_op_desc
        self._op_desc.restype, self._op_desc.argtypes = ctypes.c_char_p, [ctypes.c_void_p]
        self.layout_ok: bool | None = None  # unknown until the first node

    def read(self, tensor: int) -> Node:
        name = self._get_name(tensor).decode(errors="replace")
        op = self._op_desc(tensor).decode(errors="replace")
        head = TensorHead.from_address(tensor)
        if self.layout_ok is None:
            self.layout_ok = head.name.decode(errors="replace") == name
        weight = ""
        if self.layout_ok and op in _WEIGHT_OPS and head.src[0]:
            source = self._get_name(head.src[0]).decode(errors="replace")
            weight = source if source.endswith(".weight") else ""
        return Node(name, op, weight)


def tensor_head(tensor: int, get_name) -> TensorHead:
    """The leading fields of a ggml tensor at `tensor`, after checking the layout against ggml's own
    `ggml_get_name` (`get_name`, restype c_char_p) on it: a different ggml.h is a RuntimeError, not garbage."""
    head = TensorHead.from_address(tensor)
    if head.name != get_name(tensor):
        raise RuntimeError("ggml_tensor layout differs from llamacpp.nodes.TensorHead (another ggml version)")
    return head
