"""Fleets on a local multi-node Dask cluster: a head and three emulated devices, each its own process on
this host, all over mutual TLS, exactly as `edgeprof fleet head` / `fleet join` run them on real machines."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from edgeprof.bench.execute import execute  # noqa: E402
from edgeprof.bench.sweep import SweepSpec  # noqa: E402
from edgeprof.errors import ConfigError  # noqa: E402
from edgeprof.fleet.credentials import FleetCredentials, init_credentials  # noqa: E402
from edgeprof.fleet.head import check_address, connect, list_devices  # noqa: E402
from edgeprof.fleet.sweep import run_fleet  # noqa: E402
from edgeprof.results.records import read_records  # noqa: E402

DEVICES = {"pi": "raspberry-pi-5", "orin": "jetson-orin-nano-8gb", "xavier": "jetson-agx-xavier"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgeprof", *args], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            env={**os.environ, **env})


def _wait_for(credentials: FleetCredentials, address: str, names: set[str], present: bool = True,
              timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    client = connect(address, credentials)
    try:
        while time.monotonic() < deadline:
            joined = {d.name for d in list_devices(client)}
            if (names <= joined) if present else not (names & joined):
                return
            time.sleep(0.3)
    finally:
        client.close()
    raise AssertionError(f"devices {names} did not {'join' if present else 'leave'} within {timeout_s} s")


class Cluster:
    def __init__(self, root: Path):
        self.root = root
        self.credentials = init_credentials(root / "credentials")
        self.address = f"tls://127.0.0.1:{_free_port()}"
        self.processes: dict[str, subprocess.Popen] = {}

    def start_head(self) -> None:
        self.processes["head"] = _spawn(["fleet", "head", "--address", self.address, "--credentials",
                                         str(self.credentials.folder)], {}, self.root / "head.log")

    def join(self, name: str, profile: str) -> subprocess.Popen:
        proc = _spawn(["fleet", "join", self.address, "--device", profile, "--emulate", "--name", name,
                       "--store", str(self.root / f"store-{name}"), "--credentials", str(self.credentials.folder)],
                      {"EDGEPROF_CACHE": str(self.root / f"cache-{name}")}, self.root / f"{name}.log")
        self.processes[name] = proc
        return proc

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("fleet"))
    cluster.start_head()
    time.sleep(1.0)
    for name, profile in DEVICES.items():
        cluster.join(name, profile)
    try:
        _wait_for(cluster.credentials, cluster.address, set(DEVICES))
        yield cluster
    finally:
        cluster.stop()


def _spec(quants=("q4_0", "q8_0"), **extra) -> SweepSpec:
    return SweepSpec(models=["synth:tiny"], quants=list(quants), grid={"prompt_tokens": [16], "gen_tokens": [8]},
                     repetitions=2, warmup=0, sample_hz=0, idle_s=0, fidelity=False, energy_window_s=0, **extra)


def _spans(records: list[dict]) -> list[tuple[float, float]]:
    """Each configuration's (start, end) on its device, from its records."""
    spans: dict[str, tuple[float, float]] = {}
    for r in records:
        start, end = spans.get(r["run_key"], (r["started_at"], r["finished_at"]))
        spans[r["run_key"]] = (min(start, r["started_at"]), max(end, r["finished_at"]))
    return sorted(spans.values())


def _comparable(record: dict) -> tuple:
    """A record without its timings and the paths that differ between a device's store and a local cache."""
    model = {k: v for k, v in record["model"].items() if k != "path"}
    return (record["config_id"], record["run_key"], record["repetition"], record["status"], record["backend"],
            json.dumps(model, sort_keys=True), json.dumps(record["hyperparameters"], sort_keys=True),
            record["device"]["profile"], record["device"]["emulated"])


def test_a_sweep_runs_everywhere_one_configuration_per_device_at_a_time(cluster, tmp_path):
    events = []
    spec = _spec(quants=("q4_0", "q8_0", "q4_k_m"))
    result = run_fleet(spec, cluster.address, cluster.credentials, [], tmp_path,
                       on_event=lambda name, **info: events.append((name, info)))
    assert result.exit_code == 0, result.rows
    assert set(result.run_dirs) == set(DEVICES)
    for name, run_dir in result.run_dirs.items():
        records = read_records(run_dir / "records.jsonl")
        assert len(records) == 3 * spec.repetitions and all(r["status"] == "ok" for r in records)
        spans = _spans(records)
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), spans  # never two at once
        assert {r["device"]["profile"] for r in records} == {DEVICES[name]}
        assert all(r["device"]["fleet"]["device"] == name for r in records)
        assert all(0 <= r["metrics"]["fleet_engine_cpu_share"] < 1 and r["metrics"]["fleet_node_rss_mb"] > 0
                   for r in records)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["fleet"]["address"] == cluster.address
        assert (run_dir / "summary.csv").exists() and any((run_dir / "jobs").glob("*.stderr.log"))
    assert sum(1 for name, _ in events if name == "config_finished") == 3 * len(DEVICES)

    # The same sweep run locally as the same emulated device gives the same records, timings aside.
    local = execute(SweepSpec(**{**spec.to_dict(), "device": DEVICES["pi"], "emulate": True}), tmp_path / "local")
    fleet_records = sorted(map(_comparable, read_records(result.run_dirs["pi"] / "records.jsonl")))
    local_records = sorted(map(_comparable, read_records(local.run_dir / "records.jsonl")))
    assert fleet_records == local_records


def test_a_device_that_leaves_loses_its_unfinished_configurations_and_resume_completes_them(cluster, tmp_path):
    victim = cluster.join("victim", "raspberry-pi-5")
    _wait_for(cluster.credentials, cluster.address, {"victim"})
    spec = _spec(quants=("q4_0", "q8_0", "q4_k_m", "q5_0"))

    def on_event(name: str, **info) -> None:
        if name == "config_finished" and info["device"] == "victim" and victim.poll() is None:
            victim.send_signal(signal.SIGKILL)  # the device vanishes mid-sweep: power cut, cable pulled

    result = run_fleet(spec, cluster.address, cluster.credentials, ["victim"], tmp_path, on_event=on_event)
    records = read_records(result.run_dirs["victim"] / "records.jsonl")
    statuses = [r["status"] for r in records]
    assert result.exit_code == 1 and result.lost["victim"] >= 1
    assert statuses.count("ok") == spec.repetitions and statuses.count("lost") == result.lost["victim"] == 3
    finished = {r["run_key"] for r in records if r["status"] == "ok"}

    cluster.join("victim", "raspberry-pi-5")
    _wait_for(cluster.credentials, cluster.address, {"victim"})
    resumed = run_fleet(None, cluster.address, cluster.credentials, [], tmp_path, resume_dir=result.folder)
    records = read_records(resumed.run_dirs["victim"] / "records.jsonl")
    assert resumed.exit_code == 0 and resumed.lost["victim"] == 0
    assert [r["status"] for r in records] == ["ok"] * (4 * spec.repetitions)
    assert len({r["run_key"] for r in records}) == 4 and finished <= {r["run_key"] for r in records}
    # the configuration finished before the loss was not measured again
    assert sum(r["run_key"] in finished for r in records) == spec.repetitions


def test_a_tampered_artifact_is_refused(cluster, tmp_path):
    spec = _spec(quants=("q8_0",))
    first = run_fleet(spec, cluster.address, cluster.credentials, ["orin"], tmp_path)
    assert first.exit_code == 0
    stored = Path(read_records(first.run_dirs["orin"] / "records.jsonl")[0]["model"]["path"])
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one bit pattern changed: only the hash can tell
    stored.write_bytes(bytes(data))

    second = run_fleet(spec, cluster.address, cluster.credentials, ["orin"], tmp_path)
    [record] = read_records(second.run_dirs["orin"] / "records.jsonl")
    assert record["status"] == "failed" and "refused to measure" in record["error"] and "sha256" in record["error"]
    assert not stored.exists()  # deleted, so the next sweep ships a good copy
    third = run_fleet(spec, cluster.address, cluster.credentials, ["orin"], tmp_path)
    assert third.exit_code == 0 and stored.exists()


def test_clients_without_the_fleets_credentials_are_refused(cluster, tmp_path):
    import ssl

    host, port = check_address(cluster.address)
    # Plain TCP (what an engine client without TLS speaks): the head answers nothing and closes.
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(b"\x00" * 64)
        assert _closed(raw)
    # TLS that trusts the head but presents no certificate: refused in the handshake.
    context = ssl.create_default_context(cafile=str(cluster.credentials.ca_file("client")))
    context.check_hostname = False
    with socket.create_connection((host, port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"\x00" * 64)
                if _closed(tls):
                    raise ConnectionError("closed")
    stranger = init_credentials(tmp_path / "other-fleet")  # a valid certificate from another CA
    with pytest.raises(ConfigError, match="cannot reach the fleet"):
        connect(cluster.address, stranger, timeout_s=5)
    with pytest.raises(ConfigError, match="only over TLS"):
        check_address("tcp://127.0.0.1:8786")
    with pytest.raises(ConfigError, match="no fleet credentials"):
        FleetCredentials(tmp_path / "nowhere").security("client")


def _closed(sock) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionError, socket.timeout):
        return True


def test_fleet_status_lists_devices_and_heartbeats(cluster):
    from typer.testing import CliRunner

    from edgeprof.cli import app

    result = CliRunner().invoke(app, ["fleet", "status", cluster.address, "--credentials",
                                      str(cluster.credentials.folder)])
    assert result.exit_code == 0, result.output
    for name in DEVICES:
        assert name in result.output
    assert "s ago" in result.output


def test_fleet_commands_refuse_bad_input_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from edgeprof.cli import app

    runner = CliRunner()
    init_credentials(tmp_path / "creds")
    for args in (["fleet", "head", "--address", "tcp://0.0.0.0:8786", "--credentials", str(tmp_path / "creds")],
                 ["fleet", "status", "tls://127.0.0.1:1", "--credentials", str(tmp_path / "missing")],
                 ["fleet", "init", "--credentials", str(tmp_path / "creds")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output


# -- faults a fleet must survive, and what each role's certificate may do (issue 22, part A) -------------


def test_each_role_gets_a_bundle_with_only_its_own_key(tmp_path):
    credentials = init_credentials(tmp_path / "creds")
    for role in ("head", "device", "client"):
        bundle = credentials.folder / role
        assert sorted(p.name for p in bundle.iterdir()) == sorted(["ca.pem", f"{role}.pem", f"{role}.key"])
        assert (bundle / f"{role}.key").stat().st_mode & 0o077 == 0
    device_only = FleetCredentials(credentials.folder / "device")  # all a device is shipped
    device_only.security("worker")
    for role in ("client", "scheduler"):
        with pytest.raises(ConfigError, match="no fleet credentials"):
            device_only.security(role)


def test_a_device_certificate_cannot_run_code_anywhere(cluster, tmp_path):
    import asyncio

    from distributed import Client
    from distributed.comm import connect as engine_connect
    from distributed.protocol.serialize import ToPickle
    from distributed.security import Security

    from edgeprof.fleet.credentials import ca_name

    trusted = Client(cluster.address, security=cluster.credentials.security("client"), timeout=15, set_as_default=False)
    try:
        assert len(trusted.run(os.getpid)) >= len(DEVICES)  # a client's certificate runs code on devices: its role
        device_addresses = [d.address for d in list_devices(trusted)]
    finally:
        trusted.close()

    bundle = cluster.credentials.bundle("device")
    as_client = Security(require_encryption=True, tls_ca_file=str(bundle / "ca.pem"),
                         tls_client_cert=str(bundle / "device.pem"), tls_client_key=str(bundle / "device.key"))
    with pytest.raises((OSError, TimeoutError)):  # the head closes a device certificate's client registration
        Client(cluster.address, security=as_client, timeout=10, set_as_default=False).run(os.getpid)

    marker = tmp_path / "unpickled"

    class Payload:  # whoever unpickles this creates `marker`
        def __reduce__(self):
            return (Path.touch, (marker,))

    import ssl

    attacker = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # presents the device certificate, trusts anyone
    attacker.check_hostname = False
    attacker.verify_mode = ssl.CERT_NONE
    attacker.load_cert_chain(bundle / "device.pem", bundle / "device.key")

    async def send(address: str, message: dict):
        comm = await engine_connect(address, timeout=5, ssl_context=attacker, require_encryption=True)
        try:
            await comm.write(message)
            return await comm.read()
        finally:
            await comm.close()

    # The head unpickles nothing from a device certificate, on an operation a worker may send or not.
    for message in ({"op": "heartbeat_worker", "payload": ToPickle(Payload()), "reply": True},
                    {"op": "run_function", "function": ToPickle(Payload()), "reply": True},
                    {"op": "broadcast", "msg": {"op": "run", "function": ToPickle(Payload())}, "reply": True}):
        with pytest.raises(OSError):
            asyncio.run(send(cluster.address, message))
    assert not marker.exists()
    # A device accepts no one but the head: another device's certificate fails its TLS handshake.
    with pytest.raises(OSError):
        asyncio.run(send(device_addresses[0], {"op": "run", "function": ToPickle(Payload()), "reply": True}))
    assert not marker.exists()
    assert ca_name("device") != ca_name("client")


def test_a_device_rejoins_a_head_that_restarts_at_the_same_address(tmp_path):
    small = Cluster(tmp_path)
    small.start_head()
    device = small.join("pi", "raspberry-pi-5")
    try:
        _wait_for(small.credentials, small.address, {"pi"})
        small.processes["head"].kill()  # kill -9: no goodbye to the device
        small.processes["head"].wait()
        small.start_head()
        _wait_for(small.credentials, small.address, {"pi"})  # on its own: nobody touched the device
        assert device.poll() is None
    finally:
        small.stop()
    log = (tmp_path / "pi.log").read_text()
    assert "lost the head" in log and "rejoined" in log and "Traceback" not in log


def test_join_gives_up_in_one_line_without_a_head_or_with_a_wrong_certificate(cluster, tmp_path):
    stranger = init_credentials(tmp_path / "other-fleet")
    nowhere = f"tls://127.0.0.1:{_free_port()}"
    head_log = cluster.root / "head.log"
    handshakes_before = head_log.read_text().count("TLS handshake failed")
    for address, credentials, why in ((nowhere, cluster.credentials.folder, "no fleet head answered"),
                                      (cluster.address, stranger.folder, "do not trust")):
        result = subprocess.run([sys.executable, "-m", "edgeprof", "fleet", "join", address, "--device",
                                 "raspberry-pi-5", "--emulate", "--name", "lonely", "--store", str(tmp_path / "store"),
                                 "--credentials", str(credentials), "--timeout", "3"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert why in result.stderr.strip().splitlines()[-1], result.stderr
        assert len([line for line in result.stderr.splitlines() if "error" in line.lower()]) == 1, result.stderr
    # The foreign certificate cost the head one failed handshake (an upper bound: a late log line only lowers it).
    assert head_log.read_text().count("TLS handshake failed") - handshakes_before <= 1


def test_a_taken_name_and_a_port_in_use_are_one_line(cluster, tmp_path):
    taken = subprocess.run([sys.executable, "-m", "edgeprof", "fleet", "join", cluster.address, "--device",
                            "raspberry-pi-5", "--emulate", "--name", "pi", "--store", str(tmp_path / "store"),
                            "--credentials", str(cluster.credentials.folder)], capture_output=True, text=True, timeout=120)
    assert taken.returncode == 2 and "Traceback" not in taken.stderr, taken.stderr
    assert "already in the fleet" in taken.stderr.strip().splitlines()[-1], taken.stderr
    busy = subprocess.run([sys.executable, "-m", "edgeprof", "fleet", "head", "--address", cluster.address,
                           "--credentials", str(cluster.credentials.folder)], capture_output=True, text=True, timeout=120)
    assert busy.returncode == 2 and "Traceback" not in busy.stderr, busy.stderr
    assert "in use" in busy.stderr.strip().splitlines()[-1], busy.stderr


def test_status_tells_running_from_queued_work(cluster, tmp_path):
    from edgeprof.fleet.node import resource_name

    release = tmp_path / "release"

    def hold(path: str) -> int:  # a stand-in measurement that runs until the test releases it
        import os
        import time

        while not os.path.exists(path):
            time.sleep(0.05)
        return os.getpid()

    client = connect(cluster.address, cluster.credentials)
    try:
        futures = [client.submit(hold, str(release), pure=False, resources={resource_name("xavier"): 1},
                                 priority=2 - index, key=f"edgeprof-measure|xavier|{label}|{index}")
                   for index, label in enumerate(("first", "second"))]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until a heartbeat has reported the first one executing
            xavier = next(d for d in list_devices(client) if d.name == "xavier")
            if xavier.running:
                break
            time.sleep(0.2)
        assert xavier.running == ("first",) and xavier.queued == 1, xavier
        release.touch()
        assert len({f.result(timeout=60) for f in futures}) == 1
    finally:
        client.close()


def test_the_head_prints_no_dashboard_link_and_shipping_raises_no_large_graph_warning(cluster):
    import warnings

    from edgeprof.fleet.node import resource_name
    from edgeprof.fleet.shipping import CHUNK_BYTES

    assert "http://" not in (cluster.root / "head.log").read_text()  # its HTTP server serves nothing
    client = connect(cluster.address, cluster.credentials)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            chunk = client.submit(len, bytes(CHUNK_BYTES), pure=False, resources={resource_name("orin"): 1})
            assert chunk.result(timeout=60) == CHUNK_BYTES
    finally:
        client.close()
    assert not [w for w in caught if "large graph" in str(w.message)], [str(w.message) for w in caught]


def test_resuming_a_finished_fleet_sweep_shows_no_empty_bar(cluster, tmp_path):
    from typer.testing import CliRunner

    from edgeprof.cli import app

    first = run_fleet(_spec(quants=("q8_0",)), cluster.address, cluster.credentials, ["pi"], tmp_path)
    assert first.exit_code == 0
    result = CliRunner().invoke(app, ["sweep", "--resume", str(first.folder), "--credentials",
                                      str(cluster.credentials.folder)])
    assert result.exit_code == 0, result.output
    assert "pi: nothing left to run" in result.output
    # an empty progress bar's count, not a figure such as an inter-token latency "0.10/0.34" in the table
    assert not re.search(r"(?<![\d.])0/0(?![\d.])", result.output), result.output


def test_a_device_cannot_hand_a_client_code_as_a_result(cluster, tmp_path):
    """A stolen device bundle joins as a device; what it returns reaches clients only as plain data."""
    from edgeprof.fleet.node import resource_name

    rogue = cluster.join("rogue", "raspberry-pi-5")
    _wait_for(cluster.credentials, cluster.address, {"rogue"})
    marker = tmp_path / "ran-on-the-client"

    def crafted_result(path: str):  # what a rogue node could send back: a pickle that runs code when loaded
        from pathlib import Path

        class Payload:
            def __reduce__(self):
                return (Path.touch, (Path(path),))

        return {"records": [Payload()]}

    client = connect(cluster.address, cluster.credentials)
    try:
        plain = client.submit(lambda: {"records": [{"decode_tps": 1.5, "status": "ok"}]}, pure=False,
                              resources={resource_name("rogue"): 1})
        assert plain.result(timeout=60) == {"records": [{"decode_tps": 1.5, "status": "ok"}]}
        crafted = client.submit(crafted_result, str(marker), pure=False, resources={resource_name("rogue"): 1})
        with pytest.raises(Exception):  # noqa: B017 - whatever Dask makes of a result the head would not pass
            crafted.result(timeout=30)
    finally:
        client.close()
        rogue.send_signal(signal.SIGTERM)
        rogue.wait(timeout=30)
    assert not marker.exists()
    assert "a pickle from a device names" in (cluster.root / "head.log").read_text()
