"""Fidelity: what a quantization costs over real text (perplexity; KL, top-1 and Δp against its parent).

`measure` scores a text on a backend session by llama-perplexity's method; `stats` turns scored positions
into figures (numpy only). The names below are the package's public surface, used by the runner, the
worker and `edgeprof fidelity`.
"""

from edgeprof.fidelity.measure import (Fidelity, FidelitySettings, FidelityTextError, cache_file, make_chunks,
                                       measure_fidelity, text_sha256)

__all__ = ["Fidelity", "FidelitySettings", "FidelityTextError", "cache_file", "make_chunks", "measure_fidelity",
           "text_sha256"]
