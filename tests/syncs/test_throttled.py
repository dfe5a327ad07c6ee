"""A throttled sync asks again when the upstream said it may, not after its exponential backoff.

The backoff grows while a pause lasts (the pacer refuses every call through it), so after a long one
(Salesforce's spent-day hour, a 429's Retry-After, Airtable's 30 s) the sync waited up to its 5-minute
maximum more before reading again. A 503 with ``Retry-After`` is the same refusal. Meanwhile the sync is
waiting, not failing: its view says so, and until when.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web

from gateway.http import appkeys
from tests.conftest import GatewayFactory
from tests.syncs.harness import SyncEnv, connect, until

RETRY_AFTER = 4  # seconds; over the credential's max_wait, so the pacer refuses to queue through it
REFUSALS = {
    429: {"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Request rate limit exceeded."}},
    503: {"error": {"type": "api_error", "message": "The service is temporarily unavailable."}},
}


@pytest.mark.parametrize("status", sorted(REFUSALS))
async def test_a_throttled_sync_reads_again_when_the_retry_after_ends(
    make_gateway: GatewayFactory, aiohttp_server: Any, status: int
) -> None:
    refused: list[float] = []

    @web.middleware
    async def throttle_once(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/v1/customers" and not refused:
            refused.append(asyncio.get_running_loop().time())
            return web.json_response(REFUSALS[status], status=status, headers={"Retry-After": str(RETRY_AFTER)})
        response: web.StreamResponse = await handler(request)
        return response

    env = await connect(
        make_gateway,
        aiohttp_server,
        "stripe",
        seed=3,
        rate_limit={"rate": 100000, "per": 1, "burst": 100000, "max_wait": 1},
        before=[throttle_once],
    )
    await until("the refused read is shown", lambda: _polled(env), 10)
    view = await env.view()
    assert (view["state"], view["last_error"]) == ("backfilling", None)
    waits = datetime.fromisoformat(view["throttled_until"]) - datetime.now(UTC)
    assert RETRY_AFTER - 1.5 < waits.total_seconds() <= RETRY_AFTER, view
    await until("the backfill is complete", env.in_step, 30)
    asked = [r.at for r in env.sandbox.requests_to("/v1/customers")]  # the refused call never reached it
    assert RETRY_AFTER - 0.1 <= asked[0] - refused[0] < RETRY_AFTER + 1.5, asked[0] - refused[0]
    registry = env.gw.app[appkeys.METRICS].registry
    errors = registry.get_sample_value("gateway_sync_polls_total", {"provider": "stripe", "outcome": "error"})
    assert errors == 1  # the refusal only: no read during the pause for the pacer to refuse
    await until("the sync is live", lambda: _live(env), 30)
    assert (await env.view())["throttled_until"] is None


async def _polled(env: SyncEnv) -> bool:
    return (await env.view())["last_poll_at"] is not None


async def _live(env: SyncEnv) -> bool:
    return bool((await env.view())["state"] == "live")
