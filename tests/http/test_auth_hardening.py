"""Authentication hardening: per-address backoff after bad tokens, typed ``--only`` ids."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from gateway.errors import RateLimited
from gateway.http.throttle import TABLE_SIZE, AuthThrottle
from tests.conftest import GatewayFactory
from tests.support import FakeClock
from tests.upstream.helpers import add_credential, add_sync, raw_request, start_upstream

BACKOFF = {"auth_max_failures": 5, "auth_failure_window": 60, "auth_max_backoff": 2, "trust_forwarded": True}


async def test_repeated_bad_tokens_from_one_address_get_429(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(server=BACKOFF)
    attacker = {"X-Forwarded-For": "203.0.113.9"}  # trusted here, so each test "address" is its own
    statuses = [
        (await gw.client.get("/v1/credentials", headers={**gw.auth("gw_guess"), **attacker})).status for _ in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    blocked = await gw.client.get("/v1/credentials", headers={**gw.auth(), **attacker})
    assert blocked.status == 429 and blocked.headers["Retry-After"] == "1"  # even a good token waits
    assert (await blocked.json())["code"] == "rate_limited"
    other = await gw.client.get("/v1/credentials", headers={**gw.auth(), "X-Forwarded-For": "203.0.113.10"})
    assert other.status == 200  # other addresses are not affected
    deadline = time.monotonic() + 10
    while (resp := await gw.client.get("/v1/credentials", headers={**gw.auth(), **attacker})).status == 429:
        assert time.monotonic() < deadline, "the pause never ended"
        await asyncio.sleep(0.1)  # polling interval
    assert resp.status == 200


async def test_the_backoff_doubles_and_is_capped(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(server={**BACKOFF, "auth_max_failures": 1, "auth_max_backoff": 2})
    attacker = {**gw.auth("gw_guess"), "X-Forwarded-For": "203.0.113.9"}
    assert (await gw.client.get("/v1/credentials", headers=attacker)).status == 401
    retry_afters = []
    for _ in range(3):
        resp = await gw.client.get("/v1/credentials", headers=attacker)
        assert resp.status == 429
        retry_afters.append(int(resp.headers["Retry-After"]))
        deadline = time.monotonic() + 10
        while (await gw.client.get("/v1/credentials", headers=attacker)).status == 429:  # ends on a 401: a strike
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)  # polling interval
    assert retry_afters == [1, 2, 2]


async def test_backoff_is_off_with_zero_failures(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(server={"auth_max_failures": 0})
    for _ in range(30):
        assert (await gw.client.get("/v1/credentials", headers=gw.auth("gw_guess"))).status == 401


@pytest.mark.parametrize(
    ("only", "sync_status", "credential_status"),
    [
        (["sync:billing"], 200, 403),
        (["credential:billing"], 403, 200),
        (["sync:other", "credential:other"], 403, 403),
        (["consumer:billing"], 403, 403),
    ],
)
async def test_typed_only_ids_name_one_kind(
    make_gateway: GatewayFactory, aiohttp_server: Any, only: list[str], sync_status: int, credential_status: int
) -> None:
    upstream = await start_upstream(aiohttp_server)
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo", cid="billing")
    await add_sync(gw, "billing", sync_id="billing")
    token = await gw.token("limited", ["proxy"], only)
    sync = await gw.client.get("/v1/proxy/sync/billing/x", headers=gw.auth(token))
    credential = await gw.client.get("/v1/proxy/credential/billing/x", headers=gw.auth(token))
    assert (sync.status, credential.status) == (sync_status, credential_status)
    if credential_status == 403:
        assert "credential 'billing'" in (await credential.json())["error"]


async def test_a_token_that_is_not_utf8_is_a_401(make_gateway: GatewayFactory) -> None:
    """aiohttp hands such header bytes over as surrogates; hashing them must not end in a 500."""
    gw = await make_gateway()
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    writer.write(b"GET /v1/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b'"code": "unauthorized"' in answer


@pytest.mark.parametrize("only", [["billing"], ["sync:billing", "secret:billing"], ["sync:"], ["sync:bad id"]])
async def test_only_ids_without_a_known_kind_are_refused(make_gateway: GatewayFactory, only: list[str]) -> None:
    """POST /v1/tokens refuses a plain id, an unknown kind or a bad id after the kind: 400 naming the entry."""
    gw = await make_gateway()
    spec = {"name": "app", "scopes": ["proxy"], "only": only}
    resp = await gw.client.post("/v1/tokens", json=spec, headers=gw.auth())
    body = await resp.json()
    assert (resp.status, body["code"], body["fields"]) == (400, "invalid_request", [f"only.{len(only) - 1}"]), body
    assert "<kind>:<id>" in body["error"] and "sync, credential, consumer" in body["error"]
    assert (await gw.client.get("/v1/tokens/app", headers=gw.auth())).status == 404


def test_the_backoff_table_stays_bounded_and_keeps_blocking_recent_addresses() -> None:
    """100,000 addresses each failing past the limit: at most TABLE_SIZE are remembered, the most
    recently heard from are, and they are still held back."""
    clock = FakeClock()
    throttle = AuthThrottle(max_failures=2, window=60, max_backoff=30, clock=clock)
    for n in range(100_000):
        throttle.failed(f"10.{n >> 16}.{n >> 8 & 255}.{n & 255}")
        throttle.failed(f"10.{n >> 16}.{n >> 8 & 255}.{n & 255}")
        assert len(throttle._records) <= TABLE_SIZE
    with pytest.raises(RateLimited):
        throttle.check("10.1.134.159")  # the last address (99,999)
    throttle.check("10.0.0.0")  # the first was forgotten: it starts over
    throttle.succeeded("10.1.134.159")
    throttle.check("10.1.134.159")


@pytest.mark.parametrize("second", ["Bearer gw_not_a_token", "<admin>"])
async def test_two_authorization_headers_are_400(
    make_gateway: GatewayFactory, aiohttp_server: Any, second: str
) -> None:
    """More than one Authorization header, in any case, is refused and nothing is proxied: the first one
    used to win silently."""
    gw = await make_gateway()
    upstream = await start_upstream(aiohttp_server)
    await add_sync(gw, await add_credential(gw, upstream.url + "/echo"))
    again = gw.auth()["Authorization"] if second == "<admin>" else second
    for line in ("GET /v1/credentials HTTP/1.1", "GET /v1/proxy/sync/sync-1/items HTTP/1.1"):
        status, body = await raw_request(gw, line, {"authorization": again})
        assert status == 400, body
        assert json.loads(body)["code"] == "invalid_request" and b"Authorization" in body
    assert upstream.state.requests == 0
