"""This host's raw ceilings, measured: what `edgeprof calibrate` stores beside the llama.cpp fits
(`analysis/calibration.py`, which runs them and writes the profile).

- memory bandwidth: a STREAM-like triad (a = b + s*c) split across threads (numpy releases the GIL for
  large array operations), best of several trials, bytes counted as the arrays actually read and written;
- fp32 matrix multiply: numpy/BLAS on 2048x2048 operands, best of several;
- int8 matrix multiply: numpy has no int8 GEMM, so it is reported unavailable rather than estimated;
- on a host with a CUDA GPU and torch, the GPU's copy bandwidth and bf16/fp32 matmul rates too.
"""

from __future__ import annotations

import threading
import time

import numpy as np


def triad_bandwidth_gbps(threads: int, elements: int = 1 << 25, trials: int = 5) -> float:
    """Best triad bandwidth over `trials`, in GB/s (per thread: tmp = s*c; a = b + tmp -> 5 array passes)."""
    a, b, c = (np.ones(elements, dtype=np.float32) for _ in range(3))
    tmp = np.empty_like(a)
    bounds = np.linspace(0, elements, threads + 1, dtype=np.int64)

    def work(i: int) -> None:
        lo, hi = bounds[i], bounds[i + 1]
        np.multiply(c[lo:hi], np.float32(3.0), out=tmp[lo:hi])
        np.add(b[lo:hi], tmp[lo:hi], out=a[lo:hi])

    best = 0.0
    for _ in range(trials):
        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - start
        best = max(best, 5 * elements * 4 / elapsed / 1e9)
    return best


def matmul_gflops(n: int = 2048, trials: int = 3) -> float:
    x = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    best = 0.0
    for _ in range(trials):
        start = time.perf_counter()
        np.matmul(x, x)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def gpu_ceilings() -> dict:
    try:
        import torch
    except ImportError:
        return {"gpu": "unavailable: torch is not installed"}
    if not torch.cuda.is_available():
        return {"gpu": "unavailable: no CUDA device"}
    size = 1 << 28  # 1 GiB of bytes
    src = torch.empty(size, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    torch.cuda.synchronize()
    bandwidth = 2 * size * 10 / (time.perf_counter() - start) / 1e9
    rates = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        m = torch.randn(8192, 8192, device="cuda", dtype=dtype)
        m @ m
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            m @ m
        torch.cuda.synchronize()
        rates[name] = 2 * 8192**3 * 5 / (time.perf_counter() - start) / 1e12
    return {"gpu": torch.cuda.get_device_name(0), "gpu_bandwidth_gbps": bandwidth, "gpu_tflops": rates}
