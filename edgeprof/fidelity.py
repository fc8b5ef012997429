"""What a quantization costs: next-token agreement with the unquantized parent, on either backend.

Both models see the same fixed prompts (seeded random token ids, so the set is identical on every
machine); we compare the next-token distributions after each prompt: top-1 agreement and the KL
divergence KL(parent || quantized) in nats. On a synth model the weights are random, so the figures
show how much each storage format perturbs the computation, not task accuracy on real text.
Results are cached by the two artifacts' hashes, so a sweep computes each pair once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeprof.config import Hyperparameters

PROMPTS = 8
PROMPT_TOKENS = 32
SEED = 1234


@dataclass(frozen=True)
class Fidelity:
    parent_quant: str
    top1_agreement: float  # fraction of prompts whose most likely next token is the parent's
    kl_mean: float  # mean KL(parent || quantized) over prompts, nats
    kl_max: float
    prompts: int = PROMPTS
    prompt_tokens: int = PROMPT_TOKENS

    def to_metrics(self) -> dict:
        return {f"fidelity_{k}": v for k, v in asdict(self).items()}


def fidelity_prompts(n_vocab: int) -> np.ndarray:
    return np.random.default_rng(SEED).integers(0, n_vocab, size=(PROMPTS, PROMPT_TOKENS), dtype=np.int32)


def compare_logits(parent: np.ndarray, quantized: np.ndarray) -> tuple[float, float, float]:
    """(top-1 agreement, mean KL, max KL) between two [prompts, vocab] float logit arrays."""
    agreement = float(np.mean(parent.argmax(axis=1) == quantized.argmax(axis=1)))
    log_p = _log_softmax(parent.astype(np.float64))
    log_q = _log_softmax(quantized.astype(np.float64))
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=1)
    return agreement, float(kl.mean()), float(kl.max())


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def fidelity_hyperparameters(hp: Hyperparameters) -> Hyperparameters:
    """The measured run's execution settings (threads, GPU, provider), sized for the fidelity prompts."""
    return Hyperparameters(batch=PROMPTS, prompt_tokens=PROMPT_TOKENS, gen_tokens=0, threads=hp.threads,
                           gpu_layers=hp.gpu_layers, provider=hp.provider, flash_attn=hp.flash_attn,
                           kv_type=hp.kv_type, graph_opt=hp.graph_opt).validate()


def cache_file(cache_dir: Path, backend: str, quant_sha: str, parent_sha: str) -> Path:
    key = hashlib.sha256(f"{backend}:{quant_sha}:{parent_sha}:{PROMPTS}x{PROMPT_TOKENS}:{SEED}".encode())
    return cache_dir / f"{key.hexdigest()[:24]}.json"


def measure_fidelity(backend: str, model_path: str, parent_path: str, parent_quant: str, hp: Hyperparameters,
                     cached: Path | None = None) -> Fidelity:
    """Load the parent, then the quantized model (one at a time, to bound memory) and compare."""
    from edgeprof.backends.base import open_session

    if cached is not None and cached.exists():
        return Fidelity(**json.loads(cached.read_text()))
    fid_hp = fidelity_hyperparameters(hp)
    logits = []
    for path in (parent_path, model_path):
        session = open_session(backend, path, fid_hp, need_logits=True)
        try:
            logits.append(session.next_token_logits(fidelity_prompts(session.n_vocab)))
        finally:
            session.close()
    agreement, kl_mean, kl_max = compare_logits(*logits)
    result = Fidelity(parent_quant, agreement, kl_mean, kl_max)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(result)))
        tmp.replace(cached)
    return result
