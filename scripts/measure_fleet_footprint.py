"""What a fleet engine costs on a device: memory and CPU of one node's own processes, idle and after a task.

The fleet's engine runs beside every measurement, so on an 8 GB Jetson its resident memory and its idle
CPU share are part of what the device is asked to carry. This starts a head and then one device node of
the engine on this host (the node is told apart from the head by the processes that appear when it
joins), lets it settle, runs one trivial task on it, and samples the node's processes over a window:
RSS and USS (memory only that process holds; shared libraries are counted once per node in PSS) summed
over the node's processes, and CPU seconds per wall second.

    python scripts/measure_fleet_footprint.py --engine dask --python /path/to/venv/bin/python
    python scripts/measure_fleet_footprint.py --engine ray --python /path/to/ray-venv/bin/python
    python scripts/measure_fleet_footprint.py --engine edgeprof   # `edgeprof fleet head/join` (Dask + TLS)

Each engine is run from the interpreter given (its own venv), so neither engine's install is needed in
edgeprof's. The JSON result is printed and, with --out, written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

SETTLE_S = 10.0


def _pids() -> set[int]:
    return set(psutil.pids())


def _node_processes(pids: set[int]) -> list[psutil.Process]:
    alive = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.memory_info()
            alive.append(proc)
        except psutil.Error:
            continue
    return alive


def _new_pids(before: set[int], exclude: set[int], markers: tuple[str, ...]) -> set[int]:
    """Processes of the engine that appeared since `before`: new, not excluded, and whose command line names
    the engine (its venv's path or Ray's process titles), so nothing else running on the host is counted."""
    me = os.getpid()
    found = set()
    for pid in _pids() - before - exclude:
        try:
            cmdline = " ".join(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        if pid != me and any(marker in cmdline for marker in markers):
            found.add(pid)
    return found


def _tree(pid: int) -> set[int]:
    try:
        proc = psutil.Process(pid)
        return {pid, *(child.pid for child in proc.children(recursive=True))}
    except psutil.Error:
        return set()


def _snapshot(procs: list[psutil.Process]) -> dict:
    rss = uss = pss = cpu = 0.0
    names = []
    for proc in procs:
        try:
            full = proc.memory_full_info()
            times = proc.cpu_times()
            rss += full.rss
            uss += full.uss
            pss += getattr(full, "pss", 0)
            cpu += times.user + times.system
            names.append(" ".join(proc.cmdline()[:3])[:100])
        except psutil.Error:
            continue
    return {"rss_mb": rss / 2**20, "uss_mb": uss / 2**20, "pss_mb": pss / 2**20, "cpu_s": cpu,
            "processes": len(procs), "commands": sorted(names)}


def _window(pids: set[int], window_s: float) -> dict:
    procs = _node_processes(pids)
    first = _snapshot(procs)
    t0 = time.monotonic()
    time.sleep(window_s)
    last = _snapshot(procs)
    wall = time.monotonic() - t0
    return {"rss_mb": round(last["rss_mb"], 1), "uss_mb": round(last["uss_mb"], 1), "pss_mb": round(last["pss_mb"], 1),
            "cpu_share_of_a_core": round((last["cpu_s"] - first["cpu_s"]) / wall, 4), "window_s": round(wall, 1),
            "processes": last["processes"], "commands": last["commands"]}


def _start(cmd: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# edgeprof.fleet.node.LEAN_WORKER_CONFIG as Dask environment variables
LEAN_ENV = {"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False", "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
            "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "2s",
            "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__DISK": "False",
            "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__GIL__ENABLED": "False",
            "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL": "1s"}


def measure_dask(python: str, window_s: float, nanny: bool, lean: bool = False) -> dict:
    port = 18786
    head = _start([python, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
                   "--no-dashboard"])
    time.sleep(3)
    before = _pids()
    worker = _start([python, "-m", "distributed.cli.dask_worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1",
                     "--resources", "edgeprof-device=1", "--no-dashboard", "--nanny" if nanny else "--no-nanny"],
                    env=LEAN_ENV if lean else None)
    try:
        time.sleep(SETTLE_S)
        markers = (str(Path(python).parent.parent),)
        idle = _window(_new_pids(before, {head.pid}, markers), window_s)
        task = subprocess.run([python, "-c", (
            "from distributed import Client\n"
            f"c = Client('tcp://127.0.0.1:{port}', timeout=20)\n"
            "print(c.submit(sum, [1, 2], resources={'edgeprof-device': 1}).result())\n"
            "c.close()\n")], capture_output=True, text=True, timeout=60)
        after = _window(_new_pids(before, {head.pid}, markers), window_s)
        variant = ("worker with nanny" if nanny else "worker, no nanny") + (", lean config" if lean else ", defaults")
        return {"engine": "dask distributed", "variant": variant,
                "version": _version(python, "distributed"), "idle": idle, "after_one_task": after,
                "task_ok": task.stdout.strip() == "3"}
    finally:
        _stop(worker)
        _stop(head)


def measure_ray(python: str, window_s: float) -> dict:
    ray = str(Path(python).with_name("ray"))
    tmp = tempfile.mkdtemp(prefix="ray-fp-")
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([ray, "start", "--head", "--port", "6379", "--num-cpus", "1", "--include-dashboard", "false",
                    "--temp-dir", tmp, "--disable-usage-stats"], check=True, capture_output=True, env={**os.environ, **env})
    try:
        time.sleep(3)
        before = _pids()
        subprocess.run([ray, "start", "--address", "127.0.0.1:6379", "--num-cpus", "1",
                        "--resources", json.dumps({"edgeprof-device": 1}), "--disable-usage-stats"],
                       check=True, capture_output=True, env={**os.environ, **env})
        time.sleep(SETTLE_S)
        markers = (str(Path(python).parent.parent), "ray::")
        idle = _window(_new_pids(before, set(), markers), window_s)
        task = subprocess.run([python, "-c", (
            "import ray\n"
            "ray.init(address='127.0.0.1:6379', logging_level='ERROR')\n"
            "f = ray.remote(resources={'edgeprof-device': 1})(lambda: 3)\n"
            "print(ray.get(f.remote()))\n")], capture_output=True, text=True, timeout=120, env={**os.environ, **env})
        after = _window(_new_pids(before, set(), markers), window_s)
        return {"engine": "ray", "variant": "second node (raylet and its agents, idle workers)",
                "version": _version(python, "ray"), "idle": idle, "after_one_task": after,
                "task_ok": task.stdout.strip().endswith("3")}
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def measure_edgeprof(window_s: float) -> dict:
    """`edgeprof fleet head` and `edgeprof fleet join` (Dask with mutual TLS, edgeprof imported in the node),
    idle and after it measured one tiny configuration (the node process then holds edgeprof's parent side)."""
    home = Path(tempfile.mkdtemp(prefix="edgeprof-fp-"))
    creds = home / "fleet"
    edgeprof = [sys.executable, "-m", "edgeprof"]
    subprocess.run([*edgeprof, "fleet", "init", "--credentials", str(creds)], check=True, capture_output=True)
    address = "tls://127.0.0.1:18787"
    head = _start([*edgeprof, "fleet", "head", "--credentials", str(creds), "--address", address])
    time.sleep(4)
    node = _start([*edgeprof, "fleet", "join", address, "--credentials", str(creds), "--device", "raspberry-pi-5",
                   "--emulate", "--store", str(home / "store")], env={"EDGEPROF_CACHE": str(home / "node-cache")})
    try:
        time.sleep(SETTLE_S)
        idle = _window(_tree(node.pid), window_s)
        sweep = subprocess.run([*edgeprof, "run", "--fleet", address, "--credentials", str(creds), "-m", "synth:tiny",
                                "-q", "q4_0", "-p", "16", "-n", "8", "-r", "1", "--no-fidelity", "--idle-s", "0",
                                "--energy-window", "0", "--sample-hz", "0", "-o", str(home / "runs")],
                               capture_output=True, text=True, timeout=300, env={**os.environ, "EDGEPROF_CACHE": str(home / "cache")})
        after = _window(_tree(node.pid), window_s)
        # What the records themselves say: the node's RSS at the end of the measured configuration's span.
        during = [json.loads(line)["metrics"].get("fleet_node_rss_mb") for path in (home / "runs").glob("*/*/records.jsonl")
                  for line in path.read_text().splitlines() if line.strip()]
        return {"engine": "edgeprof fleet (dask distributed, mutual TLS)", "variant": "`edgeprof fleet join`, no nanny",
                "version": _version(sys.executable, "distributed"), "idle": idle, "after_one_task": after,
                "records_fleet_node_rss_mb": during, "task_ok": sweep.returncode == 0}
    finally:
        _stop(node)
        _stop(head)
        shutil.rmtree(home, ignore_errors=True)


def _version(python: str, package: str) -> str:
    out = subprocess.run([python, "-c", f"from importlib.metadata import version; print(version({package!r}))"],
                         capture_output=True, text=True)
    return out.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["dask", "dask-lean", "dask-nanny", "ray", "edgeprof"], required=True)
    parser.add_argument("--python", default=sys.executable, help="interpreter of the venv that has the engine")
    parser.add_argument("--window", type=float, default=30.0, help="seconds each sample window lasts")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.engine == "ray":
        result = measure_ray(args.python, args.window)
    elif args.engine == "edgeprof":
        result = measure_edgeprof(args.window)
    else:
        result = measure_dask(args.python, args.window, nanny=args.engine == "dask-nanny", lean=args.engine == "dask-lean")
    result["host"] = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
