"""A fleet's head: the Dask scheduler devices join and sweeps are submitted to, and how clients reach it.

The head listens only over TLS with client certificates (`credentials.py`), on localhost unless an
address is given: a fleet that spans machines is a deliberate `--address tls://0.0.0.0:8786`.

Devices and clients both connect to the head, and Dask trusts every peer it accepts: any connection may
ask the scheduler to run code on the devices (`Client.run`), and a message may carry a pickle, which
Dask unpickles while reading it. So the head sorts each connection by the CA that signed its
certificate (`credentials.peer_role`): a client's is served as Dask serves any; a device's may carry
only the messages a Dask worker sends its scheduler, the head unpickles nothing that a device sends
(not on the device's connection, not in a device's reply to the head), and it forwards a device's
results and errors to clients only as pickles that build plain values (`untrusted.py`): whatever arrives
from a device certificate is data, never code, on the head and on the clients.
"""

from __future__ import annotations

import contextvars
import errno
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from edgeprof.errors import ConfigError
from edgeprof.fleet import resource_name
from edgeprof.fleet.credentials import FleetCredentials, peer_role
from edgeprof.fleet.serving import NO_HTTP_ADDRESS, serve
from edgeprof.fleet.untrusted import DEVICE_OPS, check_payloads

DEFAULT_ADDRESS = "tls://127.0.0.1:8786"
CONNECT_TIMEOUT_S = 15

RUNNING_OP = "edgeprof_running"  # the head's own request: what each device executes now

logger = logging.getLogger(__name__)
_UNPICKLING_ALLOWED = contextvars.ContextVar("edgeprof_head_unpickling_allowed", default=False)



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
    """Run the scheduler at `address` until SIGINT/SIGTERM; a port in use is one line, not a traceback."""
    host, port = check_address(address)
    security = credentials.security("scheduler")
    logging.getLogger("distributed.scheduler").addFilter(_no_dashboard_link)
    for name in ("distributed.protocol.core", "distributed.protocol.pickle"):  # the refusal is logged in one line
        logging.getLogger(name).addFilter(lambda r: not (r.exc_info and isinstance(r.exc_info[1], PermissionError)))
    try:
        serve(lambda: _head_scheduler()(host=host, port=port, protocol="tls", security=security, dashboard=False,
                                        dashboard_address=NO_HTTP_ADDRESS), {})
    except (OSError, RuntimeError) as exc:  # Dask wraps the listener's OSError in "Scheduler failed to start"
        cause = _os_error(exc)
        if cause is None or cause.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            raise
        why = "is in use (another fleet head?)" if cause.errno == errno.EADDRINUSE else "is not an address of this host"
        raise ConfigError(f"cannot listen at tls://{host}:{port}: it {why}; give --address tls://HOST:OTHER_PORT") from None


def _os_error(exc: BaseException | None) -> OSError | None:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _no_dashboard_link(record: logging.LogRecord) -> bool:
    """Dask logs the address of its HTTP server as a dashboard link; a fleet empties that server (`serving.py`),
    so the link would answer 404: the head prints none."""
    return "dashboard at:" not in record.getMessage()


def _head_scheduler():
    """The Dask `Scheduler` class with the head's per-connection roles (built lazily: Dask is an extra)."""
    from distributed import Scheduler
    from distributed.comm.core import CommClosedError
    from distributed.protocol import pickle as dask_pickle

    if not getattr(dask_pickle.loads, "edgeprof_guarded", False):  # once per head process
        dask_pickle.loads = _guarded_loads(dask_pickle.loads)

    class HeadScheduler(Scheduler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.handlers[RUNNING_OP] = self.running_keys
            pooled = self.rpc.connect

            async def connect_to_device(addr, timeout=None):  # the head connects out only to devices
                comm = await pooled(addr, timeout)
                _read_as_device(comm)
                return comm

            self.rpc.connect = connect_to_device

        def handle_comm(self, comm):
            role = peer_role((comm.extra_info or {}).get("peercert"))
            if role == "client":  # this connection's task, and what it starts, may unpickle what it reads
                _UNPICKLING_ALLOWED.set(True)
            elif role == "device":
                _read_as_device(comm, DEVICE_OPS, CommClosedError)
            else:  # the TLS handshake admits only devices and clients; anything else is closed unread
                logger.warning("closed a connection from %s: its certificate is not a device's or a client's",
                               comm.peer_address)
                comm.abort()
            return super().handle_comm(comm)

        def running_keys(self) -> dict[str, list[str]]:
            """Each device's executing tasks as its last heartbeat reported them (queued ones are not)."""
            return {ws.address: [str(ts.key) for ts in ws.executing] for ws in self.workers.values()}

    return HeadScheduler


def _guarded_loads(loads):
    """Dask's unpickler, refusing unless this task serves a client's connection and is not reading a device's."""
    def guarded(x, *, buffers=()):
        if not _UNPICKLING_ALLOWED.get():
            raise PermissionError("the fleet head unpickles nothing that a device sends")
        return loads(x, buffers=buffers)

    guarded.edgeprof_guarded = True
    return guarded


def _read_as_device(comm, ops: frozenset | None = None, closed_error=None) -> None:
    """Make every read from `comm` (a device's connection or a connection to a device) refuse pickles, and,
    with `ops`, refuse and close on a message whose operation is not one of them."""
    if getattr(comm, "edgeprof_device", False):  # a pooled connection is handed out again
        return
    read = comm.read

    async def device_read(deserializers=None):
        token = _UNPICKLING_ALLOWED.set(False)
        try:
            msg = await read(deserializers)
        except PermissionError as exc:
            refused = str(exc)
        else:
            items = msg if isinstance(msg, (list, tuple)) else [msg]
            extra = {item.get("op") for item in items if isinstance(item, dict)} - (ops or set())
            if ops is not None and extra:
                refused = f"a device certificate may not send {sorted(map(str, extra))}"
            else:
                try:
                    check_payloads(msg)  # a result or an error a client would unpickle
                    return msg
                except PermissionError as exc:
                    refused = str(exc)
        finally:
            _UNPICKLING_ALLOWED.reset(token)
        logger.warning("closed the connection with %s: %s", comm.peer_address, refused)
        comm.abort()
        raise (closed_error or OSError)(refused)

    comm.read = device_read
    comm.edgeprof_device = True


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
    running: tuple[str, ...]  # labels of the measurements executing (as of its last heartbeat)
    last_heartbeat_s: float  # seconds since the head last heard from it
    queued: int = 0  # measurements assigned to it that wait for the one running


def list_devices(client) -> list[FleetDevice]:
    """The devices joined now (workers advertising an edgeprof device resource). Asked of the scheduler
    itself: `Client.scheduler_info` returns the client's cached copy when the call fails (an OSError on a
    loaded host), whose periodic refresh holds few or no workers, and devices that never left looked gone."""
    info = client.sync(client.scheduler.identity, n_workers=-1)
    processing = client.processing()
    executing = client.sync(getattr(client.scheduler, RUNNING_OP))
    now = time.time()
    devices = []
    for address, worker in info.get("workers", {}).items():
        name = str(worker.get("name"))
        if resource_name(name) not in (worker.get("resources") or {}):
            continue
        running = executing.get(address, [])
        devices.append(FleetDevice(name, address, worker.get("host", ""), tuple(_label(key) for key in running),
                                   max(now - float(worker.get("last_seen", now)), 0.0),
                                   len([key for key in processing.get(address, ()) if str(key) not in running])))
    return sorted(devices, key=lambda d: d.name)


def _label(key) -> str:
    """A task key reads `edgeprof-measure|<device>|<label>|<token>`; others are shown as they are."""
    text = str(key)
    parts = text.split("|")
    return parts[2] if len(parts) == 4 and parts[0] == "edgeprof-measure" else text
