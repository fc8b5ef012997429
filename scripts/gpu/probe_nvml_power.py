"""What NVML's power and energy sources mean on this GPU: read cost, how often each value changes, and how
each follows a load step (idle -> matmul load -> idle), sampled every ~10 ms.

    python3 scripts/gpu/probe_nvml_power.py --out probe.json

Sources: nvmlDeviceGetPowerUsage (a 1 s average on Ampere-and-later GPUs per NVML's docs), the field values
NVML_FI_DEV_POWER_INSTANT / NVML_FI_DEV_POWER_AVERAGE where the driver answers them, and the total-energy
counter. The step response shows each source's lag; the energy counter's slope is the reference power.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import pynvml as nv

FIELD_AVERAGE = getattr(nv, "NVML_FI_DEV_POWER_AVERAGE", 185)
FIELD_INSTANT = getattr(nv, "NVML_FI_DEV_POWER_INSTANT", 186)


def field_reader(handle, field_id):
    def read() -> float:
        (value,) = nv.nvmlDeviceGetFieldValues(handle, [field_id])
        if value.nvmlReturn != nv.NVML_SUCCESS:
            raise nv.NVMLError(value.nvmlReturn)
        return float(value.value.uiVal) / 1e3
    return read


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--idle-s", type=float, default=2.0)
    parser.add_argument("--load-s", type=float, default=4.0)
    args = parser.parse_args()
    nv.nvmlInit()
    handle = nv.nvmlDeviceGetHandleByIndex(0)
    sources = {
        "power_usage": lambda: nv.nvmlDeviceGetPowerUsage(handle) / 1e3,
        "field_instant": field_reader(handle, FIELD_INSTANT),
        "field_average": field_reader(handle, FIELD_AVERAGE),
        "energy_counter": lambda: nv.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3,
    }
    report: dict = {"gpu": nv.nvmlDeviceGetName(handle), "driver": nv.nvmlSystemGetDriverVersion(), "sources": {}}
    working = {}
    for name, read in sources.items():
        try:
            costs = []
            for _ in range(20):
                t = time.perf_counter()
                read()
                costs.append(time.perf_counter() - t)
            costs.sort()
            report["sources"][name] = {"read_ms_median": costs[10] * 1e3, "read_ms_min": costs[0] * 1e3}
            working[name] = read
        except Exception as exc:  # noqa: BLE001
            report["sources"][name] = {"error": repr(exc)}
    # How often each value changes at idle (polled as fast as its read allows for 2 s).
    for name, read in working.items():
        changes, last, end = [], None, time.perf_counter() + 2.0
        while time.perf_counter() < end:
            value = read()
            now = time.perf_counter()
            if last is not None and value != last:
                changes.append(now)
            last = value
            time.sleep(0.001)
        gaps = [b - a for a, b in zip(changes, changes[1:])]
        report["sources"][name]["changes_in_2s_idle"] = len(changes)
        report["sources"][name]["median_change_interval_ms"] = sorted(gaps)[len(gaps) // 2] * 1e3 if gaps else None
    # Step response.
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    stop = threading.Event()
    edges = {}

    def load() -> None:
        time.sleep(args.idle_s)
        edges["load_start"] = time.perf_counter()
        while time.perf_counter() - edges["load_start"] < args.load_s:
            for _ in range(20):
                torch.matmul(a, a)
            torch.cuda.synchronize()
        edges["load_end"] = time.perf_counter()
        time.sleep(args.idle_s)
        stop.set()

    series: dict[str, list] = {name: [] for name in working}
    thread = threading.Thread(target=load)
    t0 = time.perf_counter()
    thread.start()
    while not stop.is_set():
        for name, read in working.items():
            series[name].append((time.perf_counter() - t0, read()))
        time.sleep(0.01)
    thread.join()
    report["edges_s"] = {k: v - t0 for k, v in edges.items()}
    report["series"] = series
    # Steady load power from the counter over the middle of the load, and each source's time to reach 90 % of it.
    ls, le = report["edges_s"]["load_start"], report["edges_s"]["load_end"]
    if "energy_counter" in series:
        mid = [(t, v) for t, v in series["energy_counter"] if ls + 1.5 <= t <= le - 0.2]
        if len(mid) >= 2:
            steady = (mid[-1][1] - mid[0][1]) / (mid[-1][0] - mid[0][0])
            report["steady_load_w_from_counter"] = steady
            idle = [v for t, v in series.get("power_usage", []) if t < ls - 0.2]
            idle_w = sum(idle) / len(idle) if idle else 0.0
            report["idle_w_power_usage"] = idle_w
            for name in ("power_usage", "field_instant", "field_average"):
                if name in series:
                    target = idle_w + 0.9 * (steady - idle_w)
                    hit = next((t for t, v in series[name] if t >= ls and v >= target), None)
                    report["sources"][name]["rise_to_90pct_s"] = None if hit is None else hit - ls
                    late = [v for t, v in series[name] if ls + 1.5 <= t <= le]
                    report["sources"][name]["steady_mean_w"] = sum(late) / len(late) if late else None
    with open(args.out, "w") as f:
        json.dump(report, f, default=str)
    summary = {k: v for k, v in report.items() if k != "series"}
    print(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    main()
