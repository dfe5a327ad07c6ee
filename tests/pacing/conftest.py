"""Pacing fixtures: a counting upstream (records when each call arrives) and credentials to pace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.config import Config
from gateway.domain.models import BearerAuth, RateLimitOverride
from gateway.domain.objects import Credential
from gateway.observability.metrics import Metrics
from gateway.pacing.pacer import GatewayPacer
from gateway.pacing.redis import LEASE_TTL


def make_credential(cid: str = "cred1", provider: str = "rest", **limit: Any) -> Credential:
    return Credential(
        id=cid,
        provider=provider,
        base_url="http://127.0.0.1",
        auth=BearerAuth(type="bearer", token="secret-token"),
        rate_limit=RateLimitOverride(**limit) if limit else None,
        timeouts=None,
        ca_bundle=None,
        version=1,
    )


@dataclass
class CountingUpstream:
    """A loopback server that records the arrival time (``time.time()``) of every call to ``/hit``;
    ``tokens`` has it once per token the call says it costs (``/hit?cost=N``, default 1)."""

    url: str
    arrivals: list[float] = field(default_factory=list)
    tokens: list[float] = field(default_factory=list)
    longest_stall: float = 0.0  # s: the longest this process's event loop was late while recording
    stalls: list[float] = field(default_factory=list)  # s: each time the loop was late by over 1 ms

    def slack(self, jitter: float) -> float:
        """Slack for checks of ``arrivals``: ``jitter`` plus the loop's longest stall, since a stalled
        recorder timestamps calls that arrived on time late and together (the grant times, taken where
        the pacer lets calls go, are what the tests check with no slack)."""
        return jitter + self.longest_stall

    def lost(self, cover: float) -> float:
        """Seconds in which no bucket could grant: the part of each stall longer than ``cover`` (a
        bucket's burst over its rate, which a woken scheduler grants at once to catch up)."""
        return sum(max(0.0, stall - cover) for stall in self.stalls)


@pytest.fixture
async def counting_upstream() -> AsyncIterator[CountingUpstream]:
    upstream = CountingUpstream(url="")

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/hit":
            now = time.time()
            upstream.arrivals.append(now)
            upstream.tokens += [now] * int(request.query.get("cost", "1"))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    upstream.url = f"http://127.0.0.1:{port}/hit"
    watcher = asyncio.ensure_future(_watch_stalls(upstream))
    yield upstream
    watcher.cancel()
    await runner.cleanup()


async def _watch_stalls(upstream: CountingUpstream, tick: float = 0.005) -> None:
    """Keep ``upstream.longest_stall`` and ``stalls`` up to date: how much later than asked a short
    sleep wakes."""
    while True:
        asked = time.monotonic()
        await asyncio.sleep(tick)
        late = time.monotonic() - asked - tick
        upstream.longest_stall = max(upstream.longest_stall, late)
        if late > 0.001:
            upstream.stalls.append(late)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        yield client


@pytest.fixture
async def make_pacer() -> AsyncIterator[Callable[..., Any]]:
    """Started pacers from config sections (``pacing={...}``, ``providers={...}``), closed at the end;
    ``permit_ttl`` shortens the shared concurrency leases for tests; pass ``metrics`` to scrape them."""
    pacers: list[GatewayPacer] = []

    async def factory(
        *, permit_ttl: float = LEASE_TTL, metrics: Metrics | None = None, **sections: Any
    ) -> GatewayPacer:
        pacer = GatewayPacer(Config.model_validate(sections), metrics or Metrics(), permit_ttl=permit_ttl)
        await pacer.start()
        pacers.append(pacer)
        return pacer

    yield factory
    for pacer in pacers:
        await pacer.close()


async def warm_up(session: aiohttp.ClientSession, url: str, connections: int) -> None:
    """Open ``connections`` pooled connections first (uncounted path), as a running gateway has them."""

    async def one() -> None:
        async with session.get(url.replace("/hit", "/warm")) as response:
            await response.read()

    await asyncio.gather(*(one() for _ in range(connections)))


async def paced_calls(
    pacer: GatewayPacer, credential: Credential, session: aiohttp.ClientSession, url: str, n: int
) -> list[tuple[int, float]]:
    """Start ``n`` calls in order; each is paced, then sent. Returns (index, grant time) in grant order."""
    granted: list[tuple[int, float]] = []

    async def call(i: int) -> None:
        permit = await pacer.acquire(credential, "/hit")
        granted.append((i, time.time()))
        try:
            async with session.get(url) as response:
                await response.read()
        finally:
            permit.release()

    await asyncio.gather(*(call(i) for i in range(n)))
    return granted
