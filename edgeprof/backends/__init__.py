"""Backends: one small session protocol (`base.py`), one module per runtime."""
