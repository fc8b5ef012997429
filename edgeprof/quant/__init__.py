"""Quantization tables, one module per artifact format (`gguf`: ggml storage, llama.cpp's file types and
per-tensor rules, KV-cache types; `onnx`: the ONNX Runtime variants), and `QuantTable`, the face each
backend registers. They sit low in the flow: sources, exporters, planning and analysis all read them.

The GGUF names are re-exported here: `from edgeprof.quant import GGUF_QUANTS` was the path before the
tables became a package, and the roofline, emulation and analysis still use it.
"""

from edgeprof.quant.gguf import (GGML_BLOCKS, GGUF_PLAIN_QUANTS, GGUF_QUANTS, GGUF_TABLE, IMATRIX_SUFFIX,  # noqa: F401
                                 IQ_QUANTS, KV_CACHE_TYPES, GgufQuant, bits_per_weight, gguf_quant, gguf_tensor_type,
                                 kv_bytes_per_element)
from edgeprof.quant.table import QuantTable  # noqa: F401
