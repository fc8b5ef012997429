"""A fleet's head: the Dask scheduler devices join and sweeps are submitted to, and how clients reach it.

The head listens only over TLS with client certificates (`credentials.py`), on localhost unless an
address is given: a fleet that spans machines is a deliberate `--address tls://0.0.0.0:8786`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from edgeprof.errors import ConfigError
from edgeprof.fleet.credentials import FleetCredentials
from edgeprof.fleet import resource_name
from edgeprof.fleet.serving import NO_HTTP_ADDRESS, serve

DEFAULT_ADDRESS = "tls://127.0.0.1:8786"
CONNECT_TIMEOUT_S = 15


def check_address(address: str) -> tuple[str, int]:
    """`tls://HOST:PORT` (a bare HOST:PORT means TLS too); anything unencrypted is refused."""
    if "://" not in address:
        address = "tls://" + address
    parts = urlsplit(address)
    if parts.scheme != "tls":
        raise ConfigError(f"fleet address {address!r}: a fleet runs only over TLS (tls://HOST:PORT); its engine "
                          "executes code sent to it")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ConfigError(f"fleet address {address!r}: expected tls://HOST:PORT")
    return parts.hostname, port


def serve_head(address: str, credentials: FleetCredentials) -> None:
    """Run the scheduler at `address` until SIGINT/SIGTERM."""
    from distributed import Scheduler

    host, port = check_address(address)
    security = credentials.security("scheduler")
    serve(lambda: Scheduler(host=host, port=port, protocol="tls", security=security, dashboard=False,
                            dashboard_address=NO_HTTP_ADDRESS), {})


def connect(address: str, credentials: FleetCredentials, timeout_s: float = CONNECT_TIMEOUT_S):
    """A client of the fleet at `address`, or one line saying why there is none."""
    from distributed import Client

    host, port = check_address(address)
    security = credentials.security("client")
    try:
        return Client(f"tls://{host}:{port}", security=security, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the fleet at tls://{host}:{port} within {timeout_s:g} s ({exc.__class__.__name__}): "
                          "is `edgeprof fleet head` running there, and are these its credentials?") from None


@dataclass(frozen=True)
class FleetDevice:
    """A device as the head sees it."""

    name: str
    address: str  # the worker's engine address
    host: str
    running: tuple[str, ...]  # labels of the measurements in flight
    last_heartbeat_s: float  # seconds since the head last heard from it


def list_devices(client) -> list[FleetDevice]:
    """The devices joined now (workers advertising an edgeprof device resource)."""
    info = client.scheduler_info(n_workers=-1)
    processing = client.processing()
    now = time.time()
    devices = []
    for address, worker in info.get("workers", {}).items():
        name = str(worker.get("name"))
        if resource_name(name) not in (worker.get("resources") or {}):
            continue
        devices.append(FleetDevice(name, address, worker.get("host", ""),
                                   tuple(_label(key) for key in processing.get(address, ())),
                                   max(now - float(worker.get("last_seen", now)), 0.0)))
    return sorted(devices, key=lambda d: d.name)


def _label(key) -> str:
    """A task key reads `edgeprof-measure|<device>|<label>|<token>`; others are shown as they are."""
    text = str(key)
    parts = text.split("|")
    return parts[2] if len(parts) == 4 and parts[0] == "edgeprof-measure" else text

