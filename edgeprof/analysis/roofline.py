"""A roofline model of a decoder's "footsteps of operations": per-operator FLOPs and bytes for prefill
(batch B, prompt P) and for one decode step (batch B, context c), and time = max(FLOPs / peak,
bytes / bandwidth) + kernels x per-kernel overhead.

A phase runs in `calls` llama_decode passes (prefill splits B x P tokens into micro-batches of n_ubatch): each
pass relaunches every kernel and re-reads the weights. Greedy sampling adds a host-side op that reads each
sequence's logits once (on a GPU, an argmax over 128k logits per sequence is a visible share of a 1 ms step).

Weight bytes follow llama.cpp's real per-tensor storage (`quant.gguf_tensor_type`, block formats incl.
scales), so q4_k_m's q6_k tensors are counted as such. Activations are f32 and the KV cache is the
chosen KV type. llama.cpp computes logits only for each sequence's last prompt token, so lm_head in
prefill costs B rows, not B x P.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeprof.models.architecture import Architecture
from edgeprof.quant import GGML_BLOCKS, GgufQuant, gguf_tensor_type

CATEGORIES = ("projections", "attention", "ffn", "norms", "embedding", "lm_head", "sampling")
WEIGHT_CATEGORIES = ("projections", "ffn", "lm_head")
_ACT = 4  # bytes per activation element (f32)


@dataclass(frozen=True)
class Op:
    """One operator summed over all layers. FLOPs and bytes are totals for the phase."""

    name: str
    category: str
    flops: float
    weight_bytes: float
    other_bytes: float  # activations and KV cache read or written
    kernels: int  # kernel launches (GPU) / graph nodes (CPU) this op takes per phase

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.other_bytes

    @property
    def is_weight_matmul(self) -> bool:
        return self.category in WEIGHT_CATEGORIES and self.weight_bytes > 0


def runs_tiled(op: Op, tokens_per_call: int, matvec_max_batch: int) -> bool:
    """Whether `op` runs as a tiled matmul: a weight matmul whose call carries more columns than the backend's
    mat-vec kernels take (0: no such limit)."""
    return op.is_weight_matmul and bool(matvec_max_batch) and tokens_per_call > matvec_max_batch


@dataclass(frozen=True)
class Ceilings:
    """What the hardware can do: peak matmul rate (FLOP/s), memory bandwidth (B/s), per-kernel overhead (s).

    `by_category` overrides both rates for one operator category with effective rates fitted from real
    llama.cpp runs (`edgeprof calibrate`): e.g. k-quant matrix-vector products on a small CPU are bounded
    by dequantisation, which a datasheet or a STREAM triad does not show.
    """

    flops_per_s: float
    bytes_per_s: float
    kernel_overhead_s: float
    source: str  # "datasheet", "calibrated", ...
    by_category: dict = field(default_factory=dict, compare=False)
    # Per-kernel overhead by phase ("prefill", "decode") where a fit found them to differ, and the extra cost of
    # a weight-matmul kernel in decode once the batch exceeds the backend's mat-vec limit ("decode:tiled"):
    # llama.cpp's CUDA backend multiplies up to 8 columns with mat-vec kernels and switches to tiled ones above.
    overhead_by_phase: dict = field(default_factory=dict, compare=False)
    matvec_max_batch: int = 0
    note: str = ""  # what a user should know about these ceilings (e.g. a device without a class: datasheet only)

    def kernel_overhead(self, phase: str, op: Op, tokens_per_call: int) -> float:
        """Seconds per kernel of `op` in `phase` when each call carries `tokens_per_call` tokens."""
        seconds = self.overhead_by_phase.get(phase, self.kernel_overhead_s)
        if self.tiled(op, tokens_per_call):
            seconds += self.overhead_by_phase.get(f"{phase}:tiled", 0.0)
        return seconds

    def tiled(self, op: Op, tokens_per_call: int) -> bool:
        return runs_tiled(op, tokens_per_call, self.matvec_max_batch)

    def rates(self, category: str, phase: str = "", tiled: bool = False) -> tuple[float, float, bool]:
        """(FLOP/s, B/s, additive) for an operator category, a phase-specific fit ("decode:ffn") first, and
        for a tiled matmul its own fit ("decode:tiled:ffn") before that.

        `additive` means compute and memory time add up instead of overlapping (the max of the two): a
        small CPU decoding a few sequences dequantises and multiplies while it streams, and a fitted
        additive model follows its measured batch curve where the max of two roofs does not.
        """
        rates = ((tiled and self.by_category.get(f"{phase}:tiled:{category}")) or
                 self.by_category.get(f"{phase}:{category}") or
                 self.by_category.get(category, (self.flops_per_s, self.bytes_per_s)))
        return (rates[0], rates[1], bool(rates[2]) if len(rates) > 2 else False)


@dataclass(frozen=True)
class OpTime:
    op: Op
    compute_s: float
    memory_s: float
    overhead_s: float
    additive: bool = False

    @property
    def seconds(self) -> float:
        roofs = self.compute_s + self.memory_s if self.additive else max(self.compute_s, self.memory_s)
        return roofs + self.overhead_s

    @property
    def bound(self) -> str:
        limits = {"compute": self.compute_s, "memory": self.memory_s, "overhead": self.overhead_s}
        return max(limits, key=limits.get)


def _weight_bytes(arch: Architecture, quant: GgufQuant, role: str, rows: int, cols: int) -> float:
    """Bytes of one 2-D weight in every layer together (role as in `gguf_tensor_type`)."""
    total = 0.0
    for layer in range(arch.num_layers):
        ggml_type = gguf_tensor_type(quant, role, layer, arch.num_layers, cols)
        block, nbytes = GGML_BLOCKS[ggml_type]
        total += rows * cols / block * nbytes
    return total


def expected_experts_touched(experts: int, per_token: int, tokens: float) -> float:
    """Distinct experts a call's tokens route to, in expectation if each token picks its top-k uniformly:
    E·(1 − (1 − k/E)^T). One token touches k; the count grows towards min(E, T·k) and saturates at E. Real
    routers are less uniform (tokens of one text share experts), so this bounds real decode from above."""
    if experts <= 0 or tokens <= 0:
        return 0.0
    return experts * (1.0 - (1.0 - per_token / experts) ** tokens)


def phase_ops(arch: Architecture, quant: GgufQuant, batch: int, new_tokens: int, context: int,
              kv_bytes: float = 2.0, calls: int = 1, greedy: bool = False, ubatch: int = 512) -> list[Op]:
    """Operators of one phase: `new_tokens` per sequence (P for prefill, 1 for a decode step) attending over
    `context` positions (P for prefill, c for decode), in `calls` passes; with `greedy`, the host's argmax
    over each sequence's logits. All figures summed over layers.

    Family features: local (sliding-window) layers scan only what llama.cpp's SWA cache holds
    (`Architecture.swa_cache_cells`); soft-caps add a scale-tanh-scale on the scores and on the logits; Gemma adds a
    norm after attention and after the FFN and scales the embeddings; fused checkpoints (Phi-3) run one
    qkv and one gate_up matmul; partial rotary turns only `rotary_dim` of each head; MoE layers read the
    router and the experts the call's tokens touch (`expected_experts_touched`) and compute with k experts
    per token."""
    L, H, I, V = arch.num_layers, arch.hidden_size, arch.intermediate_size, arch.vocab_size
    q, kv, heads, hd = arch.q_dim, arch.kv_dim, arch.num_heads, arch.head_dim
    T = batch * new_tokens  # tokens through the projections
    R = sum(arch.rope_layers)  # layers that apply the rotary embedding (SmolLM3 skips every 4th)
    rot = arch.rotary_dim / hd  # share of each head the rotary embedding turns (Phi: partial)

    def matmul(name: str, category: str, role: str, rows: int, cols: int) -> Op:
        return Op(name, category, 2.0 * T * rows * cols * L, _weight_bytes(arch, quant, role, rows, cols) * calls,
                  _ACT * T * (rows + cols) * L, L * calls)

    # Attention: each layer scans its context (a local layer: at most its SWA cache); prefill sums 1..P per
    # sequence (a local layer: min(t, window) for each t), decode reads c positions.
    cells = arch.swa_cache_cells(ubatch)
    layer_context = [min(context, cells) if local and cells else context for local in arch.swa_layers]
    if new_tokens == context:
        window = arch.sliding_window or context
        pairs_of = [batch * (context * (context + 1) / 2 if not local or window >= context else
                             window * (window + 1) / 2 + (context - window) * window) for local in arch.swa_layers]
    else:
        pairs_of = [batch * new_tokens * c for c in layer_context]
    pairs = sum(pairs_of)  # summed over layers
    kv_read = 2 * batch * sum(layer_context) * kv * kv_bytes
    kv_write = 2 * T * kv * kv_bytes * L
    out_rows = batch  # logits for each sequence's last token only
    lm_weights = GGML_BLOCKS[gguf_tensor_type(quant, "output", -1, L, H)]
    lm_bytes = V * H / lm_weights[0] * lm_weights[1]
    n = calls  # every pass launches each kernel once
    score_flops = 5.0 + (12.0 if arch.attn_softcap else 0.0)  # softmax; a soft-cap adds scale, tanh, scale
    act_flops = 8.0 if arch.activation == "gelu_tanh" else 5.0

    def norm(name: str, rows: int = T, layers: int = L) -> Op:
        return Op(name, "norms", 4.0 * rows * H * layers, H * 4.0 * layers, 2 * _ACT * rows * H * layers, layers * n)

    ops = [Op("embedding", "embedding", T * H if arch.embedding_scale != 1.0 else 0.0, T * H * 2.0,
              T * H * _ACT * (2 if arch.embedding_scale != 1.0 else 1), n), norm("attn_norm")]
    if arch.fused_projections:
        ops.append(matmul("qkv_proj", "projections", "attn_qkv", q + 2 * kv, H))
    else:
        ops += [matmul("q_proj", "projections", "q", q, H), matmul("k_proj", "projections", "k", kv, H),
                matmul("v_proj", "projections", "attn_v", kv, H)]
    if arch.qk_norm:  # Qwen3, Gemma 3: an RMSNorm over each q and k head; OLMoE: over the whole projections
        gains = 2 * hd if arch.qk_norm_per_head else q + kv
        ops.append(Op("qk_norm", "norms", 4.0 * T * (q + kv) * L, gains * 4.0 * L, 2 * _ACT * T * (q + kv) * L,
                      2 * L * n))
    ops += [
        Op("rotary", "attention", 6.0 * T * (q + kv) * R * rot, 0.0, 2 * _ACT * T * (q + kv) * R * rot, 2 * R * n),
        Op("attn_scores", "attention", 2.0 * pairs * heads * hd, 0.0, kv_read / 2 + kv_write, L * n),
        Op("softmax", "attention", score_flops * pairs * heads, 0.0, 2 * _ACT * pairs * heads / max(new_tokens, 1),
           L * n * (4 if arch.attn_softcap else 1)),
        Op("attn_v", "attention", 2.0 * pairs * heads * hd, 0.0, kv_read / 2, L * n),
        matmul("o_proj", "projections", "o", H, q),
    ]
    if arch.is_gemma:
        ops.append(norm("attn_post_norm"))
    ops.append(norm("ffn_norm"))
    if arch.is_moe:
        ops += _moe_ops(arch, quant, T, calls, n)
    elif arch.fused_projections:
        ops.append(matmul("ffn_gate_up", "ffn", "up", 2 * I, H))
    else:
        ops += [matmul("ffn_gate", "ffn", "gate", I, H), matmul("ffn_up", "ffn", "up", I, H)]
    if not arch.is_moe:
        ops += [Op("ffn_act", "ffn", act_flops * T * I * L, 0.0, 3 * _ACT * T * I * L, L * n),
                matmul("ffn_down", "ffn", "ffn_down", H, I)]
    if arch.is_gemma:
        ops.append(norm("ffn_post_norm"))
    ops.append(norm("output_norm", out_rows, 1))
    # the head runs only in passes that end a sequence: at most one per sequence
    head_calls = min(calls, out_rows)
    ops.append(Op("lm_head", "lm_head", 2.0 * out_rows * H * V, lm_bytes * head_calls, _ACT * out_rows * (H + V),
                  head_calls))
    if arch.final_softcap:  # Gemma 2: scale, tanh, scale over every logit
        ops.append(Op("logit_softcap", "lm_head", 12.0 * out_rows * V, 0.0, 6 * _ACT * out_rows * V, 3 * head_calls))
    if greedy:  # the host reads each sequence's logits once (an argmax: one compare per logit)
        ops.append(Op("sampling", "sampling", float(out_rows * V), 0.0, _ACT * out_rows * V, 0))
    return ops


def _moe_ops(arch: Architecture, quant: GgufQuant, tokens: int, calls: int, n: int) -> list[Op]:
    """A MoE layer's FFN: the router (f32, as llama.cpp keeps it), the routing (softmax, top-k, weights), and
    three expert matmuls that read the experts the call's tokens touch and compute k experts per token."""
    L, H, E, k, e_i = arch.num_layers, arch.hidden_size, arch.num_experts, arch.experts_per_token, \
        arch.expert_intermediate_size
    touched = expected_experts_touched(E, k, tokens / max(calls, 1))  # per call; every call re-reads its experts

    def experts(name: str, role: str, rows: int, cols: int) -> Op:
        per_expert = _weight_bytes(arch, quant, role, rows, cols)
        return Op(name, "ffn", 2.0 * tokens * k * rows * cols * L, per_expert * touched * calls,
                  _ACT * tokens * k * (rows + cols) * L, L * n)

    return [
        Op("ffn_router", "ffn", 2.0 * tokens * E * H * L, 4.0 * E * H * L * calls, _ACT * tokens * (E + H) * L, L * n),
        Op("ffn_routing", "ffn", 10.0 * tokens * E * L, 0.0, 4 * _ACT * tokens * E * L, 5 * L * n),
        experts("ffn_gate_exps", "gate", e_i, H),
        experts("ffn_up_exps", "up", e_i, H),
        Op("ffn_act", "ffn", 5.0 * tokens * k * e_i * L, 0.0, 3 * _ACT * tokens * k * e_i * L, L * n),
        experts("ffn_down_exps", "ffn_down", H, e_i),
        Op("ffn_moe_sum", "ffn", 2.0 * tokens * k * H * L, 0.0, 2 * _ACT * tokens * k * H * L, 2 * L * n),
    ]


def time_ops(ops: list[Op], ceilings: Ceilings, phase: str = "", tokens_per_call: int = 1) -> list[OpTime]:
    """Each op's compute, memory and overhead time; `tokens_per_call` picks mat-vec or tiled matmul kernels."""
    timed = []
    for op in ops:
        flops_per_s, bytes_per_s, additive = ceilings.rates(op.category, phase, ceilings.tiled(op, tokens_per_call))
        overhead = op.kernels * ceilings.kernel_overhead(phase, op, tokens_per_call)
        timed.append(OpTime(op, op.flops / flops_per_s, op.bytes / bytes_per_s, overhead, additive))
    return timed


def category_totals(ops: list[Op], categories: tuple[str, ...]) -> tuple[float, float]:
    """FLOPs and bytes of the ops in `categories`."""
    chosen = [op for op in ops if op.category in categories]
    return sum(op.flops for op in chosen), sum(op.bytes for op in chosen)


@dataclass(frozen=True)
class Prediction:
    batch: int
    prompt: int
    gen: int
    ttft_s: float
    decode_step_s: float  # at the mean decode context (prompt + gen/2)
    prefill: list[OpTime]
    decode: list[OpTime]

    @property
    def decode_tps(self) -> float:
        return self.batch / self.decode_step_s

    @property
    def prefill_tps(self) -> float:
        return self.batch * self.prompt / self.ttft_s

    def shares(self, phase: str) -> dict[str, float]:
        times = self.prefill if phase == "prefill" else self.decode
        total = sum(t.seconds for t in times)
        shares: dict[str, float] = {}
        for t in times:
            shares[t.op.category] = shares.get(t.op.category, 0.0) + t.seconds / total
        return shares

    def bound(self, phase: str) -> str:
        times = self.prefill if phase == "prefill" else self.decode
        totals = {"compute": sum(t.compute_s for t in times), "memory": sum(t.memory_s for t in times),
                  "overhead": sum(t.overhead_s for t in times)}
        return max(totals, key=totals.get)


def prefill_calls(batch: int, prompt: int, ubatch: int) -> int:
    """llama_decode passes for a prefill of batch x prompt tokens in micro-batches of `ubatch` tokens."""
    return -(-batch * prompt // max(ubatch, 1))


def workload_ops(arch: Architecture, quant: GgufQuant, batch: int, prompt: int, gen: int, kv_bytes: float = 2.0,
                 sampler: str = "greedy", ubatch: int = 512) -> dict[str, tuple[list[Op], int]]:
    """Per phase, its ops and the tokens each llama_decode call carries: prefill in micro-batches of `ubatch`,
    and one decode step at the mean decode context (prompt + gen/2). Predictions and fits both start here."""
    greedy = sampler == "greedy"
    prefill = phase_ops(arch, quant, batch, prompt, prompt, kv_bytes, prefill_calls(batch, prompt, ubatch), greedy,
                        ubatch)
    decode = phase_ops(arch, quant, batch, 1, prompt + max(gen, 1) // 2, kv_bytes, 1, greedy, ubatch)
    return {"prefill": (prefill, min(batch * prompt, ubatch)), "decode": (decode, batch)}


def predict(arch: Architecture, quant: GgufQuant, ceilings: Ceilings, batch: int, prompt: int, gen: int,
            kv_bytes: float = 2.0, sampler: str = "greedy", ubatch: int = 512) -> Prediction:
    timed = {phase: time_ops(ops, ceilings, phase, tokens_per_call) for phase, (ops, tokens_per_call)
             in workload_ops(arch, quant, batch, prompt, gen, kv_bytes, sampler, ubatch).items()}
    prefill, decode = timed["prefill"], timed["decode"]
    return Prediction(batch, prompt, gen, sum(t.seconds for t in prefill), sum(t.seconds for t in decode),
                      prefill, decode)


def compute_bound_batch(arch: Architecture, quant: GgufQuant, ceilings: Ceilings, context: int,
                        kv_bytes: float = 2.0, limit: int = 4096) -> int | None:
    """The smallest power-of-two batch at which decode's weight matmuls (projections, FFN, lm_head) spend
    longer computing than reading (None if not by `limit`). Attention over each sequence's own KV cache
    does not amortise over the batch and stays memory-bound at any batch, so it is left out here."""
    batch = 1
    while batch <= limit:
        times = [t for t in time_ops(phase_ops(arch, quant, batch, 1, context, kv_bytes), ceilings, "decode", batch)
                 if t.op.category in WEIGHT_CATEGORIES]
        if sum(t.compute_s for t in times) > sum(t.memory_s for t in times):
            return batch
        batch *= 2
    return None
