"""The operator categories measured shares are reported in, for every backend.

They are the roofline predictor's categories (`edgeprof.analysis.roofline.CATEGORIES`) that a runtime's
graph shows, plus "other": residual adds, output-row selection, mask building, casts — work the roofline
does not model, kept visible rather than spread over the modelled categories.
"""

from __future__ import annotations

OP_CATEGORIES = ("lm_head", "embedding", "norms", "projections", "ffn", "attention", "other")


def predicted_as_measured(shares: dict[str, float]) -> dict[str, float]:
    """A roofline share dict folded onto OP_CATEGORIES (its host-side "sampling" lands in "other")."""
    folded: dict[str, float] = {}
    for category, share in shares.items():
        key = category if category in OP_CATEGORIES else "other"
        folded[key] = folded.get(key, 0.0) + share
    return folded
