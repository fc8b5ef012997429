"""What a quantization costs, over real text: perplexity, and KL divergence against the unquantized parent
at every scored position, on either backend, by llama-perplexity's method.

The text is tokenized by the runtime's own tooling (llama.cpp's vocabulary for a GGUF, the folder's
tokenizer.json for ONNX) and cut into N chunks of C tokens (C = 512 as llama-perplexity's -c; each chunk
starts with BOS where the vocabulary adds one). Each chunk is one forward pass from an empty cache; only
its second half is scored (positions C/2 .. C-2 predicting the next token), so every scored token has at
least C/2 tokens of context. Perplexity is exp(mean NLL) over the scored positions; against a parent,
each position also gives KL(parent || model) over the whole vocabulary, Δp of the true token and whether
both rank the same token first (statistics in `fidelity/stats.py`).

The parent runs first and its scored logits go to a temporary file (positions x vocab x 4 bytes:
20 chunks of a 32k vocabulary, 650 MB; of the trained model's 4096, 84 MB), so only one model is loaded
at a time. Results are cached by the two artifacts' hashes, the text's hash and the chunking.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeprof.config import Hyperparameters
from edgeprof.errors import ConfigError
from edgeprof.fidelity.stats import compare, kl_figures, log_softmax, perplexity_figures, token_nll
from edgeprof.texts import read_fidelity_text
from edgeprof.backends.base import open_session

DEFAULT_CTX = 512  # llama-perplexity's default -c
DEFAULT_CHUNKS = 20  # llama-perplexity scores every chunk of its text; 0 does that here
METHOD = "llama-perplexity: chunks from an empty cache, second half scored"
_CACHE_VERSION = 2

Progress = Callable[[str, int, int], None]


class FidelityTextError(ConfigError):
    """The text cannot fill one chunk with this model's tokens."""


@dataclass(frozen=True)
class FidelitySettings:
    """What fidelity is measured over: a text (None: edgeprof's default text), C tokens per chunk, N chunks."""

    text: str | None = None
    ctx: int = DEFAULT_CTX
    chunks: int = DEFAULT_CHUNKS  # 0: every whole chunk of the text

    def validate(self) -> "FidelitySettings":
        if self.ctx < 8 or self.ctx % 2:
            raise ConfigError(f"--fidelity-ctx must be an even number of tokens >= 8, not {self.ctx}")
        if self.chunks < 0:
            raise ConfigError(f"--fidelity-chunks must be >= 0 (0 = every chunk), not {self.chunks}")
        read_fidelity_text(self.text, min_bytes=self.ctx)  # unreadable, undecodable or too short: one line now
        return self


@dataclass(frozen=True)
class Fidelity:
    """One artifact's fidelity over a text; `figures` holds ppl (always) and, against a parent, the KL,
    top-1, Δp and perplexity-ratio statistics of `stats.kl_figures`."""

    parent_quant: str | None
    text: str  # the text file's name
    text_sha256: str
    ctx: int
    chunks: int
    positions: int  # scored positions: chunks x (ctx - ctx/2 - 1)
    figures: dict = field(default_factory=dict)

    def to_metrics(self) -> dict:
        meta = {"parent_quant": self.parent_quant, "text": self.text, "text_sha256": self.text_sha256[:16],
                "ctx": self.ctx, "chunks": self.chunks, "positions": self.positions}
        return {f"fidelity_{k}": v for k, v in {**meta, **self.figures}.items() if v is not None}


@dataclass(frozen=True)
class Chunks:
    """N chunks of C tokens (BOS placed); positions `first`.. C-2 are scored against the next token."""

    tokens: np.ndarray  # int32 [chunks, ctx]

    @property
    def first(self) -> int:
        return self.tokens.shape[1] // 2

    @property
    def scored(self) -> int:
        return self.tokens.shape[1] - self.first - 1

    def targets(self, chunk: int) -> np.ndarray:
        return self.tokens[chunk, self.first + 1:]


def make_chunks(tokens: np.ndarray, ctx: int, chunks: int, bos: int | None, text_name: str = "text") -> Chunks:
    """Cut the token stream into whole chunks as llama-perplexity does (the tail that fills no chunk is
    left out; `chunks` 0 = all of them)."""
    available = len(tokens) // ctx
    if available == 0:
        raise FidelityTextError(f"{text_name}: tokenizes to {len(tokens)} tokens with this model's vocabulary, "
                                f"fewer than one chunk of {ctx}; give a longer text or a smaller --fidelity-ctx")
    n = available if chunks <= 0 else min(chunks, available)
    grid = np.array(tokens[:n * ctx], dtype=np.int32).reshape(n, ctx)
    if bos is not None:
        grid[:, 0] = bos
    return Chunks(grid)


def fidelity_hyperparameters(hp: Hyperparameters, ctx: int) -> Hyperparameters:
    """The measured run's execution settings (threads, GPU, provider, KV type, flash attention), one
    sequence of one chunk; llama.cpp takes the chunk in one llama_decode call where n_batch allows."""
    settings = {k: v for k, v in hp.options if k not in ("n_batch", "n_ubatch")}  # the backend's defaults
    return Hyperparameters(batch=1, prompt_tokens=ctx, gen_tokens=0, context=ctx, threads=hp.threads,
                           options=settings).validate()


def cache_file(cache_dir: Path, backend: str, quant_sha: str, parent_sha: str | None, text_sha: str,
               settings: FidelitySettings) -> Path:
    key = f"{_CACHE_VERSION}:{backend}:{quant_sha}:{parent_sha}:{text_sha}:{settings.ctx}:{settings.chunks}"
    return cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def text_sha256(settings: FidelitySettings) -> str:
    return read_fidelity_text(settings.text).sha256


def measure_fidelity(backend: str, model_path: str, parent_path: str | None, parent_quant: str | None,
                     hp: Hyperparameters, settings: FidelitySettings, cached: Path | None = None,
                     progress: Progress | None = None) -> Fidelity:
    """Score the text with the parent (if any), then with the model, one loaded at a time."""
    if cached is not None and cached.exists():
        return Fidelity(**json.loads(cached.read_text()))
    text = read_fidelity_text(settings.text, min_bytes=settings.ctx)
    fid_hp = fidelity_hyperparameters(hp, settings.ctx)
    report = progress or (lambda *_: None)
    with tempfile.TemporaryDirectory(prefix="edgeprof-fidelity-", dir=_scratch(cached)) as scratch:
        parent_scores = None
        chunks = None
        if parent_path is not None:
            session = open_session(backend, parent_path, fid_hp, need_logits=True)
            try:
                chunks = _chunks(session, text, settings)
                parent_scores = _score(session, chunks, Path(scratch) / "parent.f32", report, "fidelity: parent")
            finally:
                session.close()
        session = open_session(backend, model_path, fid_hp, need_logits=True)
        try:
            own = _chunks(session, text, settings)
            if chunks is not None and not np.array_equal(own.tokens, chunks.tokens):
                raise ConfigError("the model and its parent tokenize the fidelity text differently; "
                                  "they cannot be compared position by position")
            figures = _score(session, own, None, report, "fidelity", parent_scores)
        finally:
            session.close()
    result = Fidelity(parent_quant, Path(text.path).name, text.sha256, settings.ctx, len(own.tokens),
                      len(own.tokens) * own.scored, figures)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(result)))
        tmp.replace(cached)
    return result


def _scratch(cached: Path | None) -> str | None:
    """Parent log-probabilities go beside the cache (a disk with room), else to the system temp folder."""
    if cached is None:
        return None
    cached.parent.mkdir(parents=True, exist_ok=True)
    return str(cached.parent)


def _chunks(session, text, settings: FidelitySettings) -> Chunks:
    tokens, bos = session.text_tokens(text.text)
    return make_chunks(tokens, settings.ctx, settings.chunks, bos, Path(text.path).name)


@dataclass
class _ParentScores:
    logits: np.ndarray  # memory-mapped float32 [chunks, scored, vocab], exactly as the runtime gave them
    nll: np.ndarray  # float64 [chunks * scored]


def _score(session, chunks: Chunks, keep: Path | None, report: Progress, step: str,
           parent: _ParentScores | None = None):
    """Run every chunk: with `keep`, store the scored logits (the parent's pass: float32 as the runtime gave
    them, so comparing a model with itself gives exactly 0) and return them; otherwise return the figures
    (perplexity, and the KL statistics against `parent`)."""
    n, scored = len(chunks.tokens), chunks.scored
    store = None
    nll, per_position = [], {"kl": [], "p_diff": [], "same_top": []}
    report(step, 0, n)
    for index in range(n):
        logits = session.position_logits(chunks.tokens[index], chunks.first)[:scored]
        log_probs = log_softmax(logits)
        targets = chunks.targets(index)
        nll.append(token_nll(log_probs, targets))
        if keep is not None:
            if store is None:
                store = np.lib.format.open_memmap(keep, mode="w+", dtype=np.float32,
                                                  shape=(n, scored, log_probs.shape[1]))
            store[index] = logits
        elif parent is not None:
            for name, values in compare(log_softmax(parent.logits[index]), log_probs, targets).items():
                per_position[name].append(values)
        report(step, index + 1, n)
    all_nll = np.concatenate(nll)
    if keep is not None:
        store.flush()
        return _ParentScores(store, all_nll)
    figures = perplexity_figures(all_nll)
    if parent is not None:
        figures.update(perplexity_figures(parent.nll, prefix="parent_"))
        figures.update(kl_figures(all_nll, parent.nll, {k: np.concatenate(v) for k, v in per_position.items()}))
    return figures
