"""Shared sandbox mechanics: recorder, knobs, faults, rate limit and the /_sandbox admin routes."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from gateway.sandbox import hubspot
from tests.sandbox.conftest import Running, Start

AUTH = {"Authorization": f"Bearer {hubspot.DEFAULT_TOKEN}"}
CONTACTS = "/crm/v3/objects/contacts"


@pytest.fixture
async def hs(sandbox: Start) -> Running:
    return await sandbox(hubspot.create_app(), headers=AUTH)


async def test_requests_are_recorded_with_secrets_masked(hs: Running) -> None:
    """Every request is recorded with method, path, query, body and a masked Authorization header."""
    cookie = {"Cookie": "session=s3cr3t; other=x"}
    async with hs.request("POST", CONTACTS + "?x=1", json={"properties": {"email": "a@b.co"}}, headers=cookie) as resp:
        assert resp.status == 201
    [seen] = hs.state.requests
    assert (seen.method, seen.path, seen.query) == ("POST", CONTACTS, [("x", "1")])
    assert seen.headers["Authorization"] == "Bearer ***" and seen.headers["Cookie"] == "***"
    assert seen.json() == {"properties": {"email": "a@b.co"}}
    assert seen.at <= asyncio.get_running_loop().time()


async def test_admin_requests_route_lists_masked_requests(hs: Running) -> None:
    """GET /_sandbox/requests lists what the upstream received, without the token."""
    async with hs.request("GET", CONTACTS):
        pass
    async with hs.request("GET", "/_sandbox/requests") as resp:
        body = await resp.json()
    assert [r["path"] for r in body["requests"]] == [CONTACTS]
    assert hubspot.DEFAULT_TOKEN not in str(body)


async def test_admin_knobs_route_validates_and_applies(hs: Running) -> None:
    """POST /_sandbox/knobs applies valid knobs and refuses an unknown value with 400."""
    async with hs.request("POST", "/_sandbox/knobs", json={"latency": 0.01, "fault": "5xx"}) as resp:
        assert (await resp.json())["fault"] == "5xx"
    assert hs.state.knobs.latency == 0.01
    async with hs.request("POST", "/_sandbox/knobs", json={"fault": "explode"}) as resp:
        assert resp.status == 400
    assert hs.state.knobs.fault == "5xx"


@pytest.mark.parametrize("path", ["/_sandbox/knobs", "/_sandbox/records/contacts", CONTACTS])
async def test_arrays_nested_thousands_deep_are_a_400_not_a_crash(hs: Running, path: str) -> None:
    """The parser's RecursionError is a bad body like any other (the demo's sandboxes answered 500)."""
    for body in (b"[" * 100_000, b"\xff\xfe"):
        async with hs.request("POST", path, data=body, headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == 400, await resp.text()


async def test_admin_reset_route_restores_a_fresh_sandbox(hs: Running) -> None:
    """POST /_sandbox/reset clears requests, records and knobs."""
    assert isinstance(hs.state, hubspot.HubSpotState)
    hubspot.seed(hs.state)
    hs.state.set_knobs(fault="5xx")
    async with hs.request("POST", "/_sandbox/reset") as resp:
        assert resp.status == 204
    assert hs.state.requests == [] and hs.state.objects == {} and hs.state.knobs.fault is None


async def test_5xx_fault_answers_in_the_provider_shape_for_the_given_count(hs: Running) -> None:
    """The 5xx fault hits exactly ``fault_count`` requests, with status and Retry-After as set."""
    hs.state.set_knobs(fault="5xx", fault_count=2, fault_status=503, fault_retry_after=2)
    statuses = []
    for _ in range(3):
        async with hs.request("GET", CONTACTS) as resp:
            statuses.append(resp.status)
            if resp.status == 503:
                assert resp.headers["Retry-After"] == "2.0"
                assert (await resp.json())["status"] == "error"
    assert statuses == [503, 503, 200]


async def test_reset_fault_drops_the_connection(hs: Running) -> None:
    """The reset fault closes the connection without an answer (aiohttp retries a GET once, so POST)."""
    hs.state.set_knobs(fault="reset", fault_count=1)
    with pytest.raises(aiohttp.ClientError):
        async with hs.request("POST", CONTACTS, json={"properties": {}}) as resp:
            await resp.read()
    async with hs.request("GET", CONTACTS) as resp:
        assert resp.status == 200


async def test_malformed_fault_sends_broken_json(hs: Running) -> None:
    """The malformed fault answers 200 with a JSON content type and a body that does not parse."""
    hs.state.set_knobs(fault="malformed", fault_count=1)
    async with hs.request("GET", CONTACTS) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        with pytest.raises(ValueError):
            await resp.json()


async def test_timeout_fault_stalls_the_answer(hs: Running) -> None:
    """The timeout fault holds the request for ``hang`` seconds, so a client timeout fires."""
    hs.state.set_knobs(fault="timeout", fault_count=1, hang=5)
    with pytest.raises(asyncio.TimeoutError):
        async with hs.request("GET", CONTACTS, timeout=aiohttp.ClientTimeout(total=0.3)):
            pass


async def test_latency_knob_delays_every_answer(hs: Running) -> None:
    """The latency knob adds its delay before the answer."""
    hs.state.set_knobs(latency=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with hs.request("GET", CONTACTS) as resp:
        assert resp.status == 200
    assert loop.time() - started >= 0.19


async def test_rate_limit_refuses_over_the_window_and_recovers(hs: Running) -> None:
    """Past ``rate_limit`` requests in ``rate_window`` the sandbox refuses, then admits again after it."""
    hs.state.set_knobs(rate_limit=2, rate_window=0.3)
    statuses = []
    for _ in range(3):
        async with hs.request("GET", CONTACTS) as resp:
            statuses.append(resp.status)
    assert statuses == [200, 200, 429]
    deadline = asyncio.get_running_loop().time() + 3
    while True:
        async with hs.request("GET", CONTACTS) as resp:
            if resp.status == 200:
                break
        assert asyncio.get_running_loop().time() < deadline, "window never reopened"
        await asyncio.sleep(0.05)


async def test_unauthenticated_requests_are_not_counted(hs: Running) -> None:
    """A request with a bad token is refused before it spends rate limit or daily quota."""
    async with hs.http.get(hs.url + CONTACTS, headers={"Authorization": "Bearer nope"}) as resp:
        assert resp.status == 401
    assert hs.state.daily_used == 0
