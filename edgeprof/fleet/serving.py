"""Running one of the engine's servers (the head's scheduler, a device's worker) in the foreground.

Both are built inside the Dask settings they need and serve until SIGINT, SIGTERM or SIGHUP (Ctrl-C, a
service manager, a closed SSH session) closes them in order, or until they close themselves.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

# Dask starts an HTTP server (metrics, health, info pages) beside every node, unauthenticated and
# unencrypted: with no routes and bound to localhost it serves nothing to anyone.
NO_HTTP_CONFIG = {"distributed.worker.http.routes": [], "distributed.scheduler.http.routes": []}
NO_HTTP_ADDRESS = "127.0.0.1:0"


def serve(make_server: Callable[[], object], config: dict) -> None:
    """Build a Dask server with `make_server` under `config` (kept for its lifetime) and serve it."""
    import dask

    async def main() -> None:
        with dask.config.set({**NO_HTTP_CONFIG, **config}):
            server = make_server()
            await server
            stop_on_signals(asyncio.Event(), lambda: asyncio.ensure_future(server.close()))
            await server.finished()

    asyncio.run(main())


def stop_on_signals(stop: asyncio.Event, on_stop: Callable[[], object]) -> None:
    """On SIGINT, SIGTERM or SIGHUP: set `stop` and call `on_stop` (in the running event loop)."""
    loop = asyncio.get_running_loop()

    def handle() -> None:
        stop.set()
        on_stop()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, handle)


def quiet_engine_logs() -> None:
    """A device node says itself when it joins, loses and rejoins its head; Dask's own start-up chatter
    (a dozen lines per join) and the registration error it reports in its own words are left out."""
    import logging

    logging.getLogger("distributed").setLevel(logging.WARNING)
    logging.getLogger("distributed.worker").addFilter(
        lambda record: not record.getMessage().startswith("Unable to connect to scheduler"))
