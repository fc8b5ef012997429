"""Time one repetition: reset, prefill, then `gen_tokens` decode steps, on any backend session.

Only `perf_counter_ns` calls surround the backend's own work; nothing else runs in the timed loop.
With a context depth (`hp.depth`, llama-bench's `-d`), each repetition first fills every sequence's KV
cache with `depth` tokens, untimed, as llama-bench does; the timed prompt and decode steps follow them.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from edgeprof.backends.base import BackendSession
from edgeprof.results.stats import percentiles_ms
from edgeprof.config import Hyperparameters


@dataclass
class RepetitionMetrics:
    """Figures of one repetition. Units are in the names: ms, tokens per second (tps), MB."""

    ttft_ms: float
    prefill_ms: float
    prefill_tps: float
    decode_ms: float
    decode_tps: float
    itl_ms_mean: float
    itl_ms_p50: float
    itl_ms_p90: float
    itl_ms_p99: float
    e2e_ms: float
    prompt_tokens_total: int
    decoded_tokens_total: int
    peak_rss_mb: float
    kv_cache_bytes_held: int | None = None  # what the backend's KV cache holds after the last step
    # perf_counter seconds (CLOCK_MONOTONIC) of the phase edges, for lining up with sensor samples
    t_start_s: float = 0.0
    t_prefill_end_s: float = 0.0
    t_end_s: float = 0.0

    def to_dict(self) -> dict:
        """The figures, without the clock readings (those go to `phases()`)."""
        data = asdict(self)
        for key in ("t_start_s", "t_prefill_end_s", "t_end_s"):
            data.pop(key)
        return data

    def phases(self) -> dict[str, tuple[float, float]]:
        return {"prefill": (self.t_start_s, self.t_prefill_end_s), "decode": (self.t_prefill_end_s, self.t_end_s)}


def make_prompts(hp: Hyperparameters, n_vocab: int, seed: int = 0) -> np.ndarray:
    """Seeded random prompt ids [batch, prompt_tokens]; speed does not depend on their values."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_vocab, size=(hp.batch, hp.prompt_tokens), dtype=np.int32)


def make_depth_tokens(hp: Hyperparameters, n_vocab: int, seed: int = 0) -> np.ndarray | None:
    """Seeded random ids [batch, depth] that fill the cache before the prompt (None at depth 0)."""
    if not hp.depth:
        return None
    rng = np.random.default_rng(seed + 1)  # not the prompt's own stream
    return rng.integers(0, n_vocab, size=(hp.batch, hp.depth), dtype=np.int32)


def fill_depth(session: BackendSession, depth_tokens: np.ndarray | None) -> int:
    """Reset, then (untimed) put `depth_tokens` in the cache; the position the prompt starts at."""
    session.reset()
    if depth_tokens is None:
        return 0
    session.prefill(depth_tokens)
    return depth_tokens.shape[1]


def peak_rss_mb(status_path: str = "/proc/self/status") -> float:
    """Peak resident memory of this process since it was exec'd, in MB (2**20 bytes).

    Linux's VmHWM is reset by exec, so it is the worker's own. `ru_maxrss` is not: Linux carries it across
    fork and exec, so a worker spawned by a parent that had loaded torch for an ONNX export reported the
    parent's 2.9 GB instead of its own 220 MB. ru_maxrss remains the fallback where /proc is missing
    (macOS reports it in bytes, Linux and the BSDs in KiB)."""
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


def run_repetition(session: BackendSession, prompts: np.ndarray, hp: Hyperparameters,
                   depth_tokens: np.ndarray | None = None) -> RepetitionMetrics:
    """One measured repetition. TTFT is prefill plus choosing the first token (after the depth, if any)."""
    steps = hp.gen_tokens
    step_ns = np.empty(steps, dtype=np.int64)
    if hp.depth and depth_tokens is None:
        depth_tokens = make_depth_tokens(hp, session.n_vocab)
    position = fill_depth(session, depth_tokens)
    clock = time.perf_counter_ns
    start = clock()
    session.prefill(prompts, start=position) if position else session.prefill(prompts)
    prefill_end = clock()
    last = prefill_end
    for i in range(steps):
        session.decode_step()
        now = clock()
        step_ns[i] = now - last
        last = now
    prefill_ns = prefill_end - start
    decode_ns = last - prefill_end
    itl = percentiles_ms(step_ns)
    prompt_total = hp.batch * hp.prompt_tokens
    decoded_total = hp.batch * steps
    return RepetitionMetrics(
        ttft_ms=prefill_ns / 1e6,
        prefill_ms=prefill_ns / 1e6,
        prefill_tps=prompt_total / (prefill_ns / 1e9),
        decode_ms=decode_ns / 1e6,
        decode_tps=decoded_total / (decode_ns / 1e9) if steps else float("nan"),
        itl_ms_mean=itl["mean"],
        itl_ms_p50=itl["p50"],
        itl_ms_p90=itl["p90"],
        itl_ms_p99=itl["p99"],
        e2e_ms=(last - start) / 1e6,
        prompt_tokens_total=prompt_total,
        decoded_tokens_total=decoded_total,
        peak_rss_mb=peak_rss_mb(),
        kv_cache_bytes_held=session.kv_cache_bytes_held() if hasattr(session, "kv_cache_bytes_held") else None,
        t_start_s=start / 1e9,
        t_prefill_end_s=prefill_end / 1e9,
        t_end_s=last / 1e9,
    )
