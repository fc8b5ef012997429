"""Does sampling sensors slow the measured model down? Decode tok/s with the sampler on vs off.

Runs the same configuration through the real runner (worker child process, sampler in the parent, as
`edgeprof run` does), alternating sampling at --hz with no sampling, and reports the median slowdown and
the sampler thread's own CPU time as a share of one core. Targets: slowdown < 1 %, sampler CPU < 1 %.

    python scripts/bench_sampler_overhead.py --model synth:smollm2-135m --quant q4_k_m --rounds 6 \
        --out results/energy/cpu-host/sampler_overhead_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgeprof.bench.plan import expand
from edgeprof.bench.runner import Runner, RunOptions
from edgeprof.results.records import read_records
from edgeprof.results.rundir import create_run_dir, library_versions
from edgeprof.sensors.registry import candidate_sensors, probe_sensors
from edgeprof.sensors.session import SensorSession


def one_run(configs, hz: float, reps: int) -> tuple[float, float | None, list[str]]:
    """Median decode tok/s of one runner pass; with sampling, also the sampler's CPU share of one core."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = create_run_dir(Path(tmp))
        session = None
        names: list[str] = []
        if hz:
            available, states = probe_sensors(candidate_sensors(sample_hz=hz), sample_hz=hz)
            names = [s.name for s in available]
            session = SensorSession(available, states, hz, idle_s=0, samples_path=run_dir.path / "samples.csv")
            session.start()
        start = time.perf_counter()
        try:
            Runner(run_dir, {"profile": "bench"}, RunOptions(repetitions=reps, warmup=1), sensors=session).run(configs)
        finally:
            if session:
                session.close()
        wall = time.perf_counter() - start
        records = read_records(run_dir.records_path)
        cpu_share = session.sampler.thread_cpu_s / wall if session else None
        return statistics.median(r["metrics"]["decode_tps"] for r in records), cpu_share, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="synth:smollm2-135m")
    parser.add_argument("--quant", default="q4_k_m")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--gpu-layers", type=int, default=0)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    grid = {"batch": [1], "prompt_tokens": [args.prompt], "gen_tokens": [args.gen], "threads": [args.threads],
            "gpu_layers": [args.gpu_layers]}
    configs = expand([args.model], [args.quant], ["llama.cpp"], grid)
    one_run(configs, 0, 1)  # warm caches and clocks; discarded
    on, off, shares, sensors = [], [], [], []
    for round_index in range(args.rounds):
        for hz in ((args.hz, 0) if round_index % 2 == 0 else (0, args.hz)):
            tps, share, names = one_run(configs, hz, args.reps)
            (on if hz else off).append(tps)
            if hz:
                shares.append(share)
                sensors = names
        print(f"round {round_index}: sampling on {on[-1]:.2f} tok/s, off {off[-1]:.2f} tok/s", flush=True)
    ratios = [a / b for a, b in zip(on, off)]
    result = {
        "command": sys.argv, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "libraries": library_versions(),
        "sensors_sampled": sensors, "hz": args.hz, "decode_tps_on": on, "decode_tps_off": off,
        "median_ratio_on_over_off": statistics.median(ratios),
        "median_slowdown_pct": (1 - statistics.median(ratios)) * 100,
        "sampler_cpu_pct_of_one_core": statistics.median(shares) * 100,
    }
    print(f"sensors sampled: {', '.join(sensors)} at {args.hz:g} Hz")
    print(f"median decode slowdown with sampling: {result['median_slowdown_pct']:.2f} % "
          f"(ratio {result['median_ratio_on_over_off']:.4f} over {args.rounds} rounds)")
    print(f"sampler CPU: {result['sampler_cpu_pct_of_one_core']:.3f} % of one core")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
