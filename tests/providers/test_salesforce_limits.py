"""Salesforce's 403 ``REQUEST_LIMIT_EXCEEDED`` pauses the bucket by its body (real loopback upstream).

Salesforce answers a spent 24-hour allocation with a 403, not a 429, and the answer need not carry
``Sforce-Limit-Info``: before, nothing paused, and every caller (proxy, syncs, mutations) kept
asking. Now it pauses the credential an hour, as HubSpot's and Xero's spent days.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.http import appkeys
from tests.conftest import Gateway, GatewayFactory
from tests.mutations.harness import SPECS
from tests.syncs.harness import until

SPENT = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
CONCURRENT = [{"message": "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
               "errorCode": "REQUEST_LIMIT_EXCEEDED"}]  # fmt: skip
FORBIDDEN = [{"message": "insufficient access rights " * 4000, "errorCode": "INSUFFICIENT_ACCESS"}]  # over BODY_HEAD
PATH = "/v1/proxy/credential/sf/services/data/v59.0/sobjects/Contact"
ERRORS = {"provider": "salesforce", "outcome": "error"}


async def _gateway(make_gateway: GatewayFactory, aiohttp_server: Any, body: Any) -> tuple[Gateway, list[str]]:
    """A gateway with credential ``sf`` on an upstream answering every call 403 ``body`` without
    ``Sforce-Limit-Info``; the paths the upstream was asked."""
    asked: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response(body, status=403)

    gw = await make_gateway(stream={"capture": True, "capture_lease_ttl": 3})
    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", refuse)
    server = await aiohttp_server(upstream)
    credential = {"id": "sf", "provider": "salesforce", "base_url": str(server.make_url("")).rstrip("/"),
                  "auth": SPECS["salesforce"].auth}  # fmt: skip
    async with gw.client.post("/v1/credentials", json=credential, headers=gw.auth()) as resp:
        assert resp.status == 201, await resp.text()
    return gw, asked


async def _paused_for(gw: Gateway) -> float:
    """Seconds the credential's bucket stays paused (0 when it is not)."""
    async with gw.client.get("/v1/credentials/sf", headers=gw.auth()) as resp:
        until_ = (await resp.json())["pacing"]["paused_until"]
    return 0.0 if until_ is None else float(until_) - time.time()


async def test_a_spent_allocation_pauses_the_credential_an_hour(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    gw, asked = await _gateway(make_gateway, aiohttp_server, SPENT)
    async with gw.client.get(PATH, headers=gw.auth()) as resp:
        assert resp.status == 403 and json.loads(await resp.read()) == SPENT  # relayed as it came
    assert 3500 < await _paused_for(gw) <= 3600
    async with gw.client.get(PATH, headers=gw.auth()) as resp:
        assert resp.status == 429 and float(resp.headers["Retry-After"]) > 3500
    assert len(asked) == 1


async def test_the_concurrent_requests_limit_pauses_a_second_not_an_hour(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    gw, asked = await _gateway(make_gateway, aiohttp_server, CONCURRENT)
    async with gw.client.get(PATH, headers=gw.auth()) as resp:
        assert resp.status == 403
    async with gw.client.get(PATH, headers=gw.auth()) as resp:  # sent once the second is over
        assert resp.status == 403 and float(resp.headers["x-gateway-pacing-wait-ms"]) <= 1500
    assert len(asked) == 2


async def test_another_403_pauses_nothing(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    gw, asked = await _gateway(make_gateway, aiohttp_server, FORBIDDEN)
    for _ in range(2):
        async with gw.client.get(PATH, headers=gw.auth()) as resp:
            assert resp.status == 403 and json.loads(await resp.read()) == FORBIDDEN
    assert await _paused_for(gw) == 0 and len(asked) == 2


async def test_a_sync_stops_asking_once_the_allocation_is_spent(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    gw, asked = await _gateway(make_gateway, aiohttp_server, SPENT)
    sync = {"id": "sf-sync", "credential_id": "sf", "collections": ["salesforce:contact"]}
    async with gw.client.post("/v1/syncs", json=sync, headers=gw.auth()) as resp:
        assert resp.status == 201, await resp.text()
    runners = gw.app[appkeys.SYNC_RUNNERS]
    runners.poke("sf-sync")
    registry = gw.app[appkeys.METRICS].registry

    def failed(times: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            polls = registry.get_sample_value("gateway_sync_polls_total", ERRORS)
            return bool(polls and polls >= times)

        return check

    await until("the sync failed", failed(1), 30)
    runners.poke("sf-sync")  # it sleeps the hour out; woken early (as by a resume), it reads again
    await until("the sync failed twice", failed(2), 30)
    async with gw.client.get("/v1/syncs/sf-sync", headers=gw.auth()) as resp:
        view = await resp.json()
    assert (view["state"], view["last_error"]) == ("backfilling", None)  # waiting the hour out, not failing
    assert 3500 < (datetime.fromisoformat(view["throttled_until"]) - datetime.now(UTC)).total_seconds() <= 3600
    assert len(asked) == 1  # the second poll was refused by the paused bucket, not sent
