"""Backends: one small session protocol (`base.py`), one package per runtime (`llamacpp/`, `onnxruntime/`),
each registered in `registry.py`."""
