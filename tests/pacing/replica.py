"""One gateway replica's pacer in its own process, for the multi-process Redis test and the bench.

``python -m tests.pacing.replica REDIS_URL PREFIX UPSTREAM_URL CALLS RATE BURST START_AT`` waits until
the unix time ``START_AT``, then makes ``CALLS`` paced calls to ``UPSTREAM_URL`` and exits 0.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp

from gateway.config import Config
from gateway.observability.metrics import Metrics
from gateway.pacing.pacer import GatewayPacer
from tests.pacing.conftest import make_credential, paced_calls, warm_up


async def main(redis_url: str, prefix: str, url: str, calls: int, rate: float, burst: int, start_at: float) -> None:
    config = Config.model_validate(
        {"pacing": {"backend": "redis", "redis_url": redis_url, "key_prefix": prefix, "on_backend_error": "reject"}}
    )
    pacer = GatewayPacer(config, Metrics())
    await pacer.start()
    credential = make_credential(rate=rate, burst=burst)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await warm_up(session, url, burst)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        await paced_calls(pacer, credential, session, url, calls)
    await pacer.close()


if __name__ == "__main__":
    redis_url, prefix, url, calls, rate, burst, start_at = sys.argv[1:8]
    asyncio.run(main(redis_url, prefix, url, int(calls), float(rate), int(burst), float(start_at)))
