"""``gateway sandbox run PROVIDER``: one sandbox upstream on a chosen port, until Ctrl-C or SIGTERM.

It lets a reader walk the README's single-node path with no internet and no provider account: point a
credential at ``http://127.0.0.1:<port>`` with the sandbox's own (public, non-secret) key. The
sandboxes and their credentials are the demo's (``demo.UPSTREAMS``), so the two cannot disagree.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from gateway.sandbox.common import SANDBOX
from gateway.sandbox.demo import UPSTREAMS
from gateway.sandbox.runner import run_sandbox

PROVIDERS = tuple(u.provider for u in UPSTREAMS)


async def run_one(provider: str, *, host: str, port: int, seed: bool) -> None:
    """Serve the provider's sandbox; print where, and the credential ``auth`` that it accepts, on stderr."""
    upstream = next(u for u in UPSTREAMS if u.provider == provider)
    app = upstream.create()
    if seed:
        upstream.seed(app[SANDBOX])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_sandbox(app, host=host, port=port) as url:
        print(f"{provider} sandbox at {url}; credential auth: {json.dumps(upstream.auth(url))}", file=sys.stderr)
        await stop.wait()
