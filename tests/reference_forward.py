"""An independent numpy forward pass of an HF decoder checkpoint, for parity tests.

Written from the HF modeling semantics of each family (transformers' modeling_*.py: rotate-half rotary,
GQA, RMSNorm, SwiGLU; Qwen3's and Gemma 3's per-head q/k norms and OLMoE's whole-projection ones; Gemma's
(1 + w) norms around attention and FFN, GeGLU, sqrt(hidden) embedding scale, query_pre_attn_scalar,
sliding windows and soft-caps; Phi-3's fused projections and partial rotary; top-k routed experts) and
reading the safetensors weights directly; it shares no code with the GGUF exporter it checks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from edgeprof.models.safetensors_io import SafetensorsCheckpoint


class ReferenceModel:
    def __init__(self, folder: Path):
        self.cfg = json.loads((folder / "config.json").read_text())
        self.w = SafetensorsCheckpoint(folder)
        c = self.cfg
        self.h = c["hidden_size"]
        self.n_heads = c["num_attention_heads"]
        self.n_kv = c.get("num_key_value_heads", self.n_heads)
        self.hd = c.get("head_dim") or self.h // self.n_heads
        self.eps = c["rms_norm_eps"]
        self.bias = c["model_type"] == "qwen2" or bool(c.get("attention_bias"))
        kind = c["model_type"]
        self.kind = kind
        self.qk_norm = kind in ("qwen3", "qwen3_moe", "gemma3_text", "olmoe")  # olmoe: over the whole projection
        layers = c["num_hidden_layers"]  # SmolLM3: no_rope_layers (1 = rotary); others rotate every layer
        self.rotary = c.get("no_rope_layers") or ([int((n + 1) % 4 != 0) for n in range(layers)]
                                                   if kind == "smollm3" else [1] * layers)
        self.gemma = kind in ("gemma2", "gemma3_text")
        self.norm_offset = 1.0 if self.gemma else 0.0  # Gemma's RMSNorm multiplies by (1 + w)
        self.rot_dim = int(self.hd * c.get("partial_rotary_factor", 1.0))  # Phi: rotate the first dims only
        self.scale = (c.get("query_pre_attn_scalar") or self.hd) ** -0.5 if self.gemma else self.hd ** -0.5
        window = c.get("sliding_window") if self.gemma else None
        pattern = 2 if kind == "gemma2" else c.get("sliding_window_pattern", 6)
        self.local = [bool(window) and (n + 1) % pattern != 0 for n in range(layers)]  # gemma2: even layers
        self.window = window
        self.inv_freq = self._inv_freq(c["rope_theta"], c.get("rope_scaling"))
        self.inv_freq_local = self._inv_freq(c.get("rope_local_base_freq", c["rope_theta"]), None)

    def _inv_freq(self, theta: float, rope_scaling: dict | None) -> np.ndarray:
        dim = self.rot_dim
        inv = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
        rs = rope_scaling or {}
        if rs.get("rope_type") == "linear":
            return inv / rs["factor"]
        if rs.get("rope_type") != "llama3":
            return inv
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old = rs["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        scaled = np.where(wavelen > old / lo, inv / factor, inv)
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
        return np.where(medium, smoothed, scaled)

    def _rms(self, x: np.ndarray, name: str) -> np.ndarray:
        x64 = x.astype(np.float64)
        return (x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + self.eps)) * (self.norm_offset + self.w.read(name))

    def _rope(self, x: np.ndarray, positions: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
        angles = positions[:, None] * inv_freq[None, :]  # [T, rot/2]
        cos = np.concatenate([np.cos(angles)] * 2, -1)[None]
        sin = np.concatenate([np.sin(angles)] * 2, -1)[None]
        half = self.rot_dim // 2
        turned, kept = x[..., :self.rot_dim], x[..., self.rot_dim:]
        rotated = np.concatenate([-turned[..., half:], turned[..., :half]], -1)
        return np.concatenate([turned * cos + rotated * sin, kept], -1)

    def _act(self, gate: np.ndarray) -> np.ndarray:
        if self.gemma:  # gelu_pytorch_tanh
            return 0.5 * gate * (1 + np.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate ** 3)))
        return gate / (1 + np.exp(-gate))

    def _mlp(self, h: np.ndarray, prefix: str) -> np.ndarray:
        if self.kind == "phi3":
            gate, up = np.split(h @ self.w.read(prefix + "gate_up_proj.weight").T, 2, axis=-1)
        else:
            gate, up = h @ self.w.read(prefix + "gate_proj.weight").T, h @ self.w.read(prefix + "up_proj.weight").T
        return (self._act(gate) * up) @ self.w.read(prefix + "down_proj.weight").T

    def _moe(self, h: np.ndarray, prefix: str) -> np.ndarray:
        """Softmax over all experts, the top k kept (renormalised where norm_topk_prob), their SwiGLUs summed."""
        logits = h @ self.w.read(prefix + "gate.weight").T
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        k = self.cfg["num_experts_per_tok"]
        out = np.zeros_like(h)
        for t in range(h.shape[0]):
            chosen = np.argsort(-probs[t])[:k]
            weights = probs[t, chosen] / (probs[t, chosen].sum() if self.cfg.get("norm_topk_prob") else 1.0)
            for e, weight in zip(chosen, weights):
                out[t] += weight * self._mlp(h[t:t + 1], prefix + f"experts.{e}.")[0]
        return out

    def _softcap(self, x: np.ndarray, key: str) -> np.ndarray:
        cap = self.cfg.get(key) if self.gemma else None
        return np.tanh(x / cap) * cap if cap else x

    def logits(self, tokens: list[int]) -> np.ndarray:
        """Logits [T, vocab] for every position of `tokens` (float64)."""
        T = len(tokens)
        pos = np.arange(T, dtype=np.float64)
        x = self.w.read("model.embed_tokens.weight")[tokens].astype(np.float64)
        if self.gemma:
            x = x * math.sqrt(self.h)
        causal = np.triu(np.full((T, T), -np.inf), 1)
        distance = pos[:, None] - pos[None, :]
        group = self.n_heads // self.n_kv
        q_dim, kv_dim = self.n_heads * self.hd, self.n_kv * self.hd
        for layer in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            h = self._rms(x, p + "input_layernorm.weight")

            def proj(name: str) -> np.ndarray:
                out = h @ self.w.read(p + f"self_attn.{name}.weight").T
                if self.bias:
                    out = out + self.w.read(p + f"self_attn.{name}.bias")
                return out

            if self.kind == "phi3":
                q, k, v = np.split(proj("qkv_proj"), [q_dim, q_dim + kv_dim], axis=-1)
            else:
                q, k, v = proj("q_proj"), proj("k_proj"), proj("v_proj")
            if self.qk_norm and self.kind == "olmoe":
                q, k = self._rms(q, p + "self_attn.q_norm.weight"), self._rms(k, p + "self_attn.k_norm.weight")
            q = q.reshape(T, self.n_heads, self.hd).transpose(1, 0, 2)
            k = k.reshape(T, self.n_kv, self.hd).transpose(1, 0, 2)
            v = v.reshape(T, self.n_kv, self.hd).transpose(1, 0, 2)
            if self.qk_norm and self.kind != "olmoe":
                q, k = self._rms(q, p + "self_attn.q_norm.weight"), self._rms(k, p + "self_attn.k_norm.weight")
            if self.rotary[layer]:
                inv_freq = self.inv_freq_local if self.local[layer] else self.inv_freq
                q, k = self._rope(q, pos, inv_freq), self._rope(k, pos, inv_freq)
            k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
            mask = causal + (np.where(distance >= self.window, -np.inf, 0.0) if self.local[layer] else 0.0)
            scores = self._softcap(q @ k.transpose(0, 2, 1) * self.scale, "attn_logit_softcapping") + mask
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = (scores / scores.sum(-1, keepdims=True)) @ v
            out = attn.transpose(1, 0, 2).reshape(T, -1) @ self.w.read(p + "self_attn.o_proj.weight").T
            if self.gemma:  # sandwich: post_attention_layernorm closes attention, pre_feedforward opens the FFN
                x = x + self._rms(out, p + "post_attention_layernorm.weight")
                h = self._rms(x, p + "pre_feedforward_layernorm.weight")
                x = x + self._rms(self._mlp(h, p + "mlp."), p + "post_feedforward_layernorm.weight")
                continue
            x = x + out
            h = self._rms(x, p + "post_attention_layernorm.weight")
            x = x + (self._moe(h, p + "mlp.") if "num_experts" in self.cfg else self._mlp(h, p + "mlp."))
        x = self._rms(x, "model.norm.weight")
        head = "model.embed_tokens.weight" if self.cfg.get("tie_word_embeddings") else "lm_head.weight"
        return self._softcap(x @ self.w.read(head).T, "final_logit_softcapping")

    def greedy(self, prompt: list[int], steps: int) -> list[int]:
        tokens = list(prompt)
        out = []
        for _ in range(steps + 1):
            nxt = int(np.argmax(self.logits(tokens)[-1]))
            out.append(nxt)
            tokens.append(nxt)
        return out
