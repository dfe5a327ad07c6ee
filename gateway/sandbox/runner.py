"""Start any aiohttp app on loopback for tests, the demo and the benches.

``async with run_sandbox(app) as base_url`` binds 127.0.0.1 on a free port (or the one given), sets
the sandbox's ``base_url`` when the app is a sandbox, and tears everything down on exit. The short
shutdown timeout matters: a request stalled by the ``timeout`` fault must not hold the test's exit.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from gateway.sandbox.common import SANDBOX


@asynccontextmanager
async def run_sandbox(
    app: web.Application, *, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None
) -> AsyncIterator[str]:
    """Serve ``app`` until the block exits; yields ``http://127.0.0.1:<port>``.

    ``sock``: an already bound socket to serve on, for an app that must know its port before its
    startup runs (the demo starts sandboxes on free ports then, which could take a port only chosen).
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        base_url = f"http://{host}:{bound}"
        if SANDBOX in app:
            app[SANDBOX].base_url = base_url
        yield base_url
    finally:
        await runner.cleanup()
