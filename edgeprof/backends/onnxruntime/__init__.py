"""ONNX Runtime (placeholder; the registry entry is added in the next step)."""
