"""Exporters: HF checkpoints to runnable, quantized artifacts (GGUF now; ONNX is a sibling module)."""
