"""A credential changed while its sync reads takes effect on the sync's reads within the cache's bound.

The poller read the credential once per round and used that copy for every page of it, and a backfill
is one round however long it takes: a rotated key (or a new base URL, a lower limit) reached the
sync's reads only once the whole backfill was done, where every other call gets it within 2 s.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

from aiohttp import web

from gateway.upstream.cache import MAX_STALENESS
from tests.conftest import GatewayFactory
from tests.syncs.harness import connect, until

NEW_KEY = "sk_test_rotated_key_9876543210"
PAGE_LATENCY = 0.25  # seconds per page the upstream takes, so the backfill outlasts the bound
SLACK = 1.5  # seconds on top of the bound: a loaded machine delays the cache's check


async def test_a_rotated_key_reaches_the_backfill_within_the_bound(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    sent: list[tuple[float, str]] = []  # (when, the key) of each page read
    first: list[str] = []

    @web.middleware
    async def keys(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != "/v1/customers":
            response: web.StreamResponse = await handler(request)
            return response
        header = request.headers["Authorization"]
        first[:] = first or [header]
        sent.append((time.monotonic(), base64.b64decode(header.split()[1]).decode().split(":")[0]))
        await asyncio.sleep(PAGE_LATENCY)
        # The sandbox knows one key: the rotated one stands for it (as the provider would accept it).
        response = await handler(request.clone(headers={**request.headers, "Authorization": first[0]}))
        return response

    env = await connect(make_gateway, aiohttp_server, "stripe", seed=3000, before=[keys])
    await until("the backfill reads", lambda: _pages(sent, 2), 30)
    patch = {"auth": {"type": "basic", "username": NEW_KEY, "password": ""}}
    async with env.gw.client.patch("/v1/credentials/cred-stripe", json=patch, headers=env.gw.auth()) as resp:
        assert resp.status == 200, await resp.text()
    rotated = time.monotonic()
    await until("the backfill is complete", env.in_step, 60)
    later = [key for at, key in sent if at > rotated + MAX_STALENESS + SLACK]
    assert later, "the backfill ended before the bound: nothing to compare"
    assert set(later) == {NEW_KEY}, f"{later.count(NEW_KEY)} of {len(later)} reads after the bound had the new key"


async def _pages(sent: list[tuple[float, str]], n: int) -> bool:
    return len(sent) >= n
