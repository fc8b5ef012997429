"""What calibration buys at each bit width, on the model trained here (trained:stdlib-llama), both runtimes.

For each quantization: fidelity over the held-out default text (perplexity, KL against the unquantized
parent with its standard error, top-1 agreement; `edgeprof fidelity`'s method, 10 chunks of 512 tokens),
the artifact's bytes, and decode tok/s on this CPU host. Calibrated types (IQ, `-imat`, int4-gptq) are
calibrated on *training-distribution* text, not on the text they are judged on: modules of this
interpreter's standard library that the held-out text does not contain (the model was trained on the
standard library minus the held-out modules), concatenated up to CALIBRATION_BYTES.

Speed: every artifact's session open at once, rounds interleaved (A B C … A B C …), decode tok/s of
DECODE_STEPS greedy steps after a 64-token prompt, median of ROUNDS rounds. This host is shared with
other jobs (load average reported in the output): read speeds as relative, drift 10-30 %.

Usage: python scripts/calibrated_sweep.py [OUT_DIR] [--gpu]   (default results/quantization/calibrated, the
committed run of findings §10; results/INDEX.md)
`--gpu` (the GPU machine, scripts/gpu/device_session.sh stage `calibrated`): GGUF only, every layer on the GPU.
Writes sweep.json (every row) and pareto.png (edgeprof.analysis.pareto).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sysconfig
import time
from pathlib import Path

from edgeprof.backends.llamacpp.lib import load_llama_cpp

load_llama_cpp()  # before numpy: a CUDA build's model load crashed with numpy's libraries loaded first

import numpy as np  # noqa: E402

GGUF_QUANTS = ["f16", "q4_k_m", "q4_k_m-imat", "q3_k_m", "q3_k_m-imat", "q2_k", "q2_k-imat", "iq3_xxs", "iq2_xs",
               "iq2_xxs"]
ONNX_QUANTS = ["fp32", "int4", "int4-gptq", "int4-hqq"]
CALIBRATION_MODULES = ["json", "csv.py", "argparse.py", "dataclasses.py", "pathlib.py", "functools.py"]
CALIBRATION_BYTES = 60_000
ROUNDS = 9
DECODE_STEPS = 64
THREADS = 2


def calibration_text(folder: Path) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in CALIBRATION_MODULES:
        path = stdlib / name
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        parts += [f.read_text(encoding="utf-8") for f in files]
    text = "\n".join(parts)[:CALIBRATION_BYTES]
    out = folder / "calibration.txt"
    out.write_text(text[:text.rfind("\n") + 1], encoding="utf-8")
    return out


def decode_speeds(artifacts: dict[tuple[str, str], str], gpu_layers: int = 0) -> dict[tuple[str, str], list[float]]:
    """Decode tok/s of each artifact in every round after the warm-up one."""
    from edgeprof.backends.base import open_session
    from edgeprof.config import Hyperparameters

    hp = Hyperparameters(prompt_tokens=64, gen_tokens=DECODE_STEPS, threads=THREADS, gpu_layers=gpu_layers)
    prompts = np.arange(1, 65, dtype=np.int32)[None, :]
    sessions = {key: open_session(key[0], path, hp.for_backend(_options(key[0]))) for key, path in artifacts.items()}
    speeds: dict = {key: [] for key in sessions}
    try:
        for _ in range(ROUNDS + 1):  # the first round warms up
            for key, session in sessions.items():
                session.reset()
                session.prefill(prompts.astype(np.int64) if key[0] == "onnxruntime" else prompts)
                start = time.perf_counter()
                for _ in range(DECODE_STEPS):
                    session.decode_step()
                speeds[key].append(DECODE_STEPS / (time.perf_counter() - start))
    finally:
        for session in sessions.values():
            session.close()
    return {key: values[1:] for key, values in speeds.items()}


def _options(backend: str):
    """The backend's options dataclass (what `Hyperparameters.for_backend` fills in)."""
    from edgeprof.backends.registry import get

    return get(backend).options


def main(out: Path, gpu: bool = False) -> None:
    from edgeprof.analysis.pareto import pareto_figure, points_from_rows
    from edgeprof.bench.fidelity_run import measure_fidelity_of
    from edgeprof.fidelity import FidelitySettings

    out.mkdir(parents=True, exist_ok=True)
    calibration = calibration_text(out)
    settings = FidelitySettings(None, 512, 10)
    started = time.time()
    gpu_layers = -1 if gpu else 0
    rows = measure_fidelity_of(["trained:stdlib-llama"], GGUF_QUANTS, ["llama.cpp"], settings, THREADS, gpu_layers,
                               calibration_text=str(calibration))
    if not gpu:
        rows += measure_fidelity_of(["trained:stdlib-llama"], ONNX_QUANTS, ["onnxruntime"], settings, THREADS,
                                    calibration_text=str(calibration))
    fidelity_s = time.time() - started
    (out / "fidelity_rows.json").write_text(json.dumps(rows, indent=1, default=str))
    artifacts = _artifact_paths(rows, calibration)
    load_before = os.getloadavg()
    speeds = decode_speeds({key: artifact.path for key, artifact in artifacts.items()}, gpu_layers)
    for row in rows:
        key = (row["backend"], row["quant"])
        row["decode_tps_rounds"] = [round(v, 1) for v in speeds[key]]
        row["decode_tps_mean"] = statistics.median(speeds[key])  # the median (the chart's field name)
        row["decode_tps_best"] = max(speeds[key])  # the least-disturbed round on a loaded host
        row["bytes"], row["imatrix"] = artifacts[key].bytes, artifacts[key].imatrix
    result = {
        "model": "trained:stdlib-llama", "fidelity_text": "edgeprof default (held out)",
        "calibration_text": {"modules": CALIBRATION_MODULES, "bytes": calibration.stat().st_size,
                             "sha256": hashlib.sha256(calibration.read_bytes()).hexdigest()},
        "speed": {"threads": THREADS, "gpu_layers": gpu_layers, "prompt_tokens": 64, "decode_steps": DECODE_STEPS, "rounds": ROUNDS,
                  "statistic": "decode_tps_mean holds the median of interleaved rounds after one warm-up round "
                               "(decode_tps_best the fastest round, decode_tps_rounds all)",
                  "load_average_before": load_before, "load_average_after": os.getloadavg(),
                  "host": "the GPU machine, every layer offloaded" if gpu else
                  "shared 2-core CPU host (other engineers' jobs running): relative figures, drift 10-30 %"},
        "fidelity_seconds": round(fidelity_s, 1),
        "rows": rows,
    }
    (out / "sweep.json").write_text(json.dumps(result, indent=1, default=str))
    if not gpu:  # on the GPU machine importing matplotlib after llama.cpp's CUDA build crashed (SIGSEGV)
        fig = pareto_figure(points_from_rows(rows), "trained:stdlib-llama: KL vs size and decode speed (CPU host, shared)")
        fig.savefig(out / "pareto.png")
    for row in rows:
        print(f"{row['backend']:12} {row['quant']:12} KL {row.get('fidelity_kl_mean')}  "
              f"PPL {row.get('fidelity_ppl')}  {row.get('bytes')} B  median {row['decode_tps_mean']:.0f} "
              f"best {row['decode_tps_best']:.0f} tok/s")


def _artifact_paths(rows: list[dict], calibration: Path) -> dict:
    """(backend, quant) -> the artifact fidelity used (cached exports: nothing is re-made)."""
    from edgeprof.export.gguf_export import export_gguf
    from edgeprof.export.onnx_export import export_onnx
    from edgeprof.models.source import resolve

    source = resolve("trained:stdlib-llama")
    found = {}
    for row in rows:
        export = export_gguf if row["backend"] == "llama.cpp" else export_onnx
        found[(row["backend"], row["quant"])] = export(source, row["quant"], calibration_text=str(calibration))
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=Path("results/quantization/calibrated"),
                        help="folder for sweep.json, pareto.png, fidelity_rows.json, calibration.txt")
    parser.add_argument("--gpu", action="store_true", help="GGUF only, every layer on the GPU")
    args = parser.parse_args()
    main(args.out, gpu=args.gpu)
