"""Perplexity and KL-divergence statistics over scored token positions, as llama-perplexity computes them.

Inputs are per-position arrays (nats): the negative log-likelihood of the true next token, and against a
parent model the KL divergence KL(parent || model) of the whole next-token distribution, the change in
the true token's probability (Δp = p_model - p_parent) and whether both rank the same token first.
Uncertainties follow llama-perplexity (tools/perplexity/perplexity.cpp) so the figures can be set side
by side: the standard error of a mean is sqrt((E[x²] - E[x]²) / (n - 1)), perplexity's is ppl times that
of the mean NLL, top-1 agreement's is the binomial sqrt(p (1 - p) / (n - 1)), percentiles interpolate
linearly between sorted values. One difference: the KL here sums every token of the vocabulary in
float64; llama-perplexity keeps the parent's log-probabilities as 16-bit codes and skips tokens below
e^-16 (below its own standard error on any text long enough to have one).
"""

from __future__ import annotations

import math

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 of [positions, vocab] logits."""
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def token_nll(log_probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log p(target) per position (nats)."""
    return -log_probs[np.arange(len(targets)), targets]


def compare(parent_log_probs: np.ndarray, log_probs: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """Per-position KL(parent || model), Δp of the true token and same-top-1, from two [positions, vocab]
    float64 log-probability arrays."""
    rows = np.arange(len(targets))
    kl = np.sum(np.exp(parent_log_probs) * (parent_log_probs - log_probs), axis=-1)
    p_diff = np.exp(log_probs[rows, targets]) - np.exp(parent_log_probs[rows, targets])
    same_top = parent_log_probs.argmax(axis=-1) == log_probs.argmax(axis=-1)
    return {"kl": np.maximum(kl, 0.0), "p_diff": p_diff, "same_top": same_top}


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error, as llama-perplexity's mean_and_uncertainty (0 with 10 or fewer values)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    mean = float(values.mean())
    var = float((values * values).mean()) - mean * mean
    return mean, (math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0)


def percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """llama-perplexity's percentile: linear interpolation at fraction * (n - 1) of sorted values."""
    if fraction <= 0:
        return float(sorted_values[0])
    if fraction >= 1:
        return float(sorted_values[-1])
    position = fraction * (len(sorted_values) - 1)
    low = int(position)
    weight = position - low
    high = min(low + 1, len(sorted_values) - 1)
    return float((1 - weight) * sorted_values[low] + weight * sorted_values[high])


def median(sorted_values: np.ndarray) -> float:
    n = len(sorted_values)
    return float(sorted_values[n // 2] if n % 2 else 0.5 * (sorted_values[n // 2] + sorted_values[n // 2 - 1]))


def perplexity_figures(nll: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Perplexity exp(mean NLL) and its standard error (ppl times the mean NLL's)."""
    mean, se = mean_and_se(nll)
    ppl = math.exp(mean)
    return {f"{prefix}ppl": ppl, f"{prefix}ppl_se": ppl * se}


def kl_figures(nll: np.ndarray, parent_nll: np.ndarray, per_position: dict[str, np.ndarray]) -> dict[str, float]:
    """KL, top-1 agreement, Δp and the perplexity ratio against the parent (llama-perplexity's
    --kl-divergence statistics); fractions are fractions (top-1 0.97 = 97 %), KL in nats."""
    kl, p_diff, same = per_position["kl"], per_position["p_diff"], per_position["same_top"]
    n = len(kl)
    kl_mean, kl_se = mean_and_se(kl)
    kl_sorted, dp_sorted = np.sort(kl), np.sort(p_diff)
    dp_mean, dp_se = mean_and_se(p_diff)
    mse, mse_se = mean_and_se(p_diff * p_diff)
    rms = math.sqrt(mse)
    top1 = float(np.mean(same))
    log_q, log_q_se = mean_and_se(nll)
    log_b, log_b_se = mean_and_se(parent_nll)
    cov = (float(np.mean(nll * parent_nll)) - log_q * log_b) / (n - 1) if n >= 10 else 0.0
    ratio_se = math.sqrt(max(log_q_se ** 2 + log_b_se ** 2 - 2 * cov, 0.0))
    return {
        "kl_mean": kl_mean, "kl_se": kl_se, "kl_median": median(kl_sorted),
        "kl_p90": percentile(kl_sorted, 0.90), "kl_p99": percentile(kl_sorted, 0.99),
        "kl_p999": percentile(kl_sorted, 0.999), "kl_max": float(kl_sorted[-1]),
        "top1_agreement": top1, "top1_se": math.sqrt(top1 * (1 - top1) / (n - 1)) if n > 1 else 0.0,
        "dp_mean": dp_mean, "dp_se": dp_se, "dp_rms": rms, "dp_rms_se": 0.5 / rms * mse_se if rms else 0.0,
        "dp_p01": percentile(dp_sorted, 0.01), "dp_p05": percentile(dp_sorted, 0.05),
        "dp_median": median(dp_sorted), "dp_p95": percentile(dp_sorted, 0.95), "dp_p99": percentile(dp_sorted, 0.99),
        "dp_min": float(dp_sorted[0]), "dp_max": float(dp_sorted[-1]),
        "ln_ppl_ratio": log_q - log_b, "ln_ppl_ratio_se": ratio_se,
    }
