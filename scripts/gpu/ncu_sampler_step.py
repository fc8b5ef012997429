"""Issue 25: which kernels greedy-on-the-device adds to a batch-1 decode step, and their GPU time.

Run under Nsight Compute, once per sampler (`greedy`: edgeprof's default, the batched argmax in the graph;
`none`: no token chosen, as llama-bench):
    ncu --csv --metrics gpu__time_duration.sum python3 scripts/gpu/ncu_sampler_step.py GGUF greedy > greedy.csv
It prefills PROMPT tokens, then decodes STEPS steps, all layers on the GPU; the kernels of the decode steps
are those after the marker line this script prints. Wall-clock step times (without ncu) come from
scripts/bench_product_path.py; this gives the kernels only.
"""

from __future__ import annotations

import os
import sys

from edgeprof.backends.llamacpp.lib import load_llama_cpp

load_llama_cpp()  # before numpy (see load_llama_cpp)

import numpy as np  # noqa: E402

from edgeprof.backends.llamacpp.options import LlamaCppOptions  # noqa: E402
from edgeprof.backends.llamacpp.session import LlamaCppSession  # noqa: E402
from edgeprof.config import Hyperparameters  # noqa: E402

PROMPT, STEPS = int(os.environ.get("PROMPT", 512)), 8  # PROMPT: a shorter prompt for a quick try


def main(path: str, sampler: str) -> None:
    hp = Hyperparameters(prompt_tokens=PROMPT, gen_tokens=STEPS + 1, threads=8, gpu_layers=-1, sampler=sampler)
    session = LlamaCppSession(path, hp.for_backend(LlamaCppOptions))
    try:
        session.reset()
        session.prefill(np.arange(1, PROMPT + 1, dtype=np.int32)[None, :])
        session.decode_step()  # the first decode step builds its graph; the steps after reuse it
        print(f"==== decode steps ({STEPS}) start, sampling={session.info()['sampling']}", flush=True)
        for _ in range(STEPS):
            session.decode_step()
    finally:
        session.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
