"""Backfilling syncs leave room for users' calls on the same credential: their calls are paced at
priority ``low``, so a user's call is granted before any of theirs that is still waiting."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.http import appkeys
from gateway.sandbox.common import Knobs
from tests.conftest import GatewayFactory
from tests.syncs.harness import SYNC, connect, until

RATE = 10.0  # calls per second on the credential
USER_CALLS = 8


async def test_users_calls_wait_less_than_two_intervals_while_a_sync_backfills(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    env = await connect(
        make_gateway,
        aiohttp_server,
        "stripe",
        seed=4000,
        # The upstream refuses anything over the bound (1 + 10 calls in any second), plus one call of
        # margin for arrival jitter on a loaded machine.
        knobs=Knobs(rate_limit=int(RATE) + 2, rate_window=1),
        rate_limit={"rate": RATE, "per": 1, "burst": 1},
        options={"max_share": 0.5},
    )
    for extra in ("sync-two", "sync-three"):  # three pollers keep the bucket's queue full of sync calls
        body = {"id": extra, "credential_id": "cred-stripe", "collections": ["stripe:customer"],
                "options": {"poll_interval": 1}}  # fmt: skip
        async with env.gw.client.post("/v1/syncs", json=body, headers=env.gw.auth()) as resp:
            assert resp.status == 201
        env.gw.app[appkeys.SYNC_RUNNERS].poke(extra)
    await until("the backfills are under way", lambda: _progress_over(env, 300))
    token = await env.gw.token("user", ["proxy"])
    waits = []
    for _ in range(USER_CALLS):  # a user at 2 calls/s
        started = asyncio.get_running_loop().time()
        async with env.gw.client.get(f"/v1/proxy/sync/{SYNC}/v1/customers?limit=1", headers=env.gw.auth(token)) as resp:
            assert resp.status == 200
            waits.append(float(resp.headers["x-gateway-pacing-wait-ms"]) / 1000)
        await asyncio.sleep(max(0.0, 0.5 - (asyncio.get_running_loop().time() - started)))  # the user's pace
    assert (await env.view())["state"] == "backfilling"  # the sync was busy all along
    assert max(waits) < 2 / RATE, waits
    registry = env.gw.app[appkeys.METRICS].registry
    assert not registry.get_sample_value("gateway_upstream_requests_total", {"provider": "stripe", "status": "429"})
    low = registry.get_sample_value("gateway_pacing_wait_seconds_count", {"provider": "stripe", "priority": "low"})
    normal = registry.get_sample_value(
        "gateway_pacing_wait_seconds_count", {"provider": "stripe", "priority": "normal"}
    )
    assert low and low > 30 and normal == USER_CALLS  # the syncs' calls queue as low, the user's as normal


async def _progress_over(env: Any, n: int) -> bool:
    return bool(sum((await env.view())["progress"].values()) >= n)
