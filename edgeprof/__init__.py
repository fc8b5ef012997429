"""edgeprof: run and profile LLMs on edge devices and server GPUs under identical settings."""

__version__ = "0.1.0"
