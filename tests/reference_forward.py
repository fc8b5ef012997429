"""An independent numpy forward pass of an HF Llama/Qwen2 checkpoint, for parity tests.

Written from the HF modeling semantics (rotate-half rotary, GQA, RMSNorm, SwiGLU) and reading the
safetensors weights directly; it shares no code with the GGUF exporter it checks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from edgeprof.safetensors_io import SafetensorsCheckpoint


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
        self.qk_norm = c["model_type"] == "qwen3"  # RMSNorm over each q and k head, before the rotary embedding
        layers = c["num_hidden_layers"]  # SmolLM3: no_rope_layers (1 = rotary); others rotate every layer
        self.rotary = c.get("no_rope_layers") or ([int((n + 1) % 4 != 0) for n in range(layers)]
                                                   if c["model_type"] == "smollm3" else [1] * layers)
        self.inv_freq = self._inv_freq()

    def _inv_freq(self) -> np.ndarray:
        c = self.cfg
        inv = 1.0 / (c["rope_theta"] ** (np.arange(0, self.hd, 2, dtype=np.float64) / self.hd))
        rs = c.get("rope_scaling") or {}
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
        return (x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + self.eps)) * self.w.read(name)

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        angles = positions[:, None] * self.inv_freq[None, :]  # [T, hd/2]
        cos = np.concatenate([np.cos(angles)] * 2, -1)[None]
        sin = np.concatenate([np.sin(angles)] * 2, -1)[None]
        half = self.hd // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    def logits(self, tokens: list[int]) -> np.ndarray:
        """Logits [T, vocab] for every position of `tokens` (float64)."""
        T = len(tokens)
        pos = np.arange(T, dtype=np.float64)
        x = self.w.read("model.embed_tokens.weight")[tokens].astype(np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        group = self.n_heads // self.n_kv
        for layer in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            h = self._rms(x, p + "input_layernorm.weight")

            def proj(name: str) -> np.ndarray:
                out = h @ self.w.read(p + f"self_attn.{name}.weight").T
                if self.bias:
                    out = out + self.w.read(p + f"self_attn.{name}.bias")
                return out

            q = proj("q_proj").reshape(T, self.n_heads, self.hd).transpose(1, 0, 2)
            k = proj("k_proj").reshape(T, self.n_kv, self.hd).transpose(1, 0, 2)
            v = proj("v_proj").reshape(T, self.n_kv, self.hd).transpose(1, 0, 2)
            if self.qk_norm:
                q, k = self._rms(q, p + "self_attn.q_norm.weight"), self._rms(k, p + "self_attn.k_norm.weight")
            if self.rotary[layer]:
                q, k = self._rope(q, pos), self._rope(k, pos)
            k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(self.hd) + mask
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attn = (scores / scores.sum(-1, keepdims=True)) @ v
            x = x + attn.transpose(1, 0, 2).reshape(T, -1) @ self.w.read(p + "self_attn.o_proj.weight").T
            h = self._rms(x, p + "post_attention_layernorm.weight")
            gate = h @ self.w.read(p + "mlp.gate_proj.weight").T
            up = h @ self.w.read(p + "mlp.up_proj.weight").T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ self.w.read(p + "mlp.down_proj.weight").T
        x = self._rms(x, "model.norm.weight")
        head = "model.embed_tokens.weight" if self.cfg.get("tie_word_embeddings") else "lm_head.weight"
        return x @ self.w.read(head).T

    def greedy(self, prompt: list[int], steps: int) -> list[int]:
        tokens = list(prompt)
        out = []
        for _ in range(steps + 1):
            nxt = int(np.argmax(self.logits(tokens)[-1]))
            out.append(nxt)
            tokens.append(nxt)
        return out
