"""Text an upstream wrote reaches the store whatever it holds (real HTTP upstream, real PostgreSQL).

PostgreSQL's text refuses NUL and UTF-8 cannot hold a lone surrogate: an upstream error message with
one failed the write of the sync's ``last_error`` (the sync showed no error at all), and a record id
with one failed every commit of its page with the store's own error. An upstream quoting the key it was
sent (as Stripe's 401 does) must not put the credential's secret into either answer or any log line.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from structlog.testing import capture_logs

from gateway.http import appkeys
from tests.conftest import Gateway, GatewayFactory
from tests.mutations.harness import SPECS
from tests.syncs.harness import SYNC, until

Answer = Callable[[web.Request], Awaitable[web.Response]]


async def _sync_reading(make_gateway: GatewayFactory, aiohttp_server: Any, answer: Answer) -> Gateway:
    """A gateway whose Stripe sync reads an upstream answering every call with ``answer``."""
    gw = await make_gateway(stream={"capture": True, "capture_lease_ttl": 3})
    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", answer)
    server = await aiohttp_server(upstream)
    credential = {"id": "cred-odd", "provider": "stripe", "base_url": str(server.make_url("")).rstrip("/"),
                  "auth": SPECS["stripe"].auth}  # fmt: skip
    sync = {"id": SYNC, "credential_id": "cred-odd", "collections": ["stripe:customer"]}
    for path, body in (("/v1/credentials", credential), ("/v1/syncs", sync)):
        async with gw.client.post(path, json=body, headers=gw.auth()) as resp:
            assert resp.status == 201, await resp.text()
    gw.app[appkeys.SYNC_RUNNERS].poke(SYNC)
    return gw


async def _error_when_failing(gw: Gateway) -> str:
    found: list[str] = []

    async def failing() -> bool:
        async with gw.client.get(f"/v1/syncs/{SYNC}", headers=gw.auth()) as resp:
            view = await resp.json()
        found[:] = [view["last_error"]] if view["state"] == "failing" else []
        return bool(found)

    await until("the sync is failing", failing, 30)
    return found[0]


async def test_an_upstream_error_holding_a_nul_is_the_syncs_last_error(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    async def refuse(_request: web.Request) -> web.Response:
        return web.json_response({"error": {"type": "invalid_request_error", "message": "bad\x00value"}}, status=400)

    gw = await _sync_reading(make_gateway, aiohttp_server, refuse)
    assert await _error_when_failing(gw) == "Error: Stripe validation error: `bad\ufffdvalue`"


async def test_a_record_id_holding_a_nul_fails_the_sync_with_a_sentence(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    async def listing(request: web.Request) -> web.Response:
        record = {"id": "evt_1"} if request.path == "/v1/events" else {"id": "cus_\x00odd", "object": "customer"}
        return web.json_response({"object": "list", "data": [record], "has_more": False})

    gw = await _sync_reading(make_gateway, aiohttp_server, listing)
    assert "a record has an 'id' the gateway cannot store" in await _error_when_failing(gw)


async def test_a_lone_surrogate_in_an_error_is_stored_replaced(make_gateway: GatewayFactory) -> None:
    """No upstream answer parsed as JSON carries one (it is refused there), but a header-borne text could."""
    gw = await make_gateway()
    objects = gw.app[appkeys.OBJECTS]
    credential = {"id": "c", "provider": "stripe", "base_url": "http://127.0.0.1:9", "auth": SPECS["stripe"].auth}
    for path, body in (("/v1/credentials", credential), ("/v1/syncs", {"id": SYNC, "credential_id": "c"})):
        async with gw.client.post(path, json=body, headers=gw.auth()) as resp:
            assert resp.status == 201, await resp.text()
    await objects.set_sync_failing(SYNC, "odd \ud800 and \x00 text")
    assert (await objects.sync(SYNC)).last_error == "odd \ufffd and \ufffd text"


async def test_an_upstream_quoting_the_key_it_was_sent_never_shows_it(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """The key and the whole Authorization header, quoted in a 401's message: masked in the sync's
    ``last_error``, in a mutation's error body and in every log event (before the log's own patterns)."""
    header = "Basic " + base64.b64encode(SPECS["stripe"].auth["username"].encode() + b":").decode()
    leaks = (SPECS["stripe"].auth["username"], header.removeprefix("Basic "))

    async def quote(request: web.Request) -> web.Response:
        sent = request.headers["Authorization"]
        key = base64.b64decode(sent.removeprefix("Basic ")).decode().rstrip(":")
        message = f"Invalid API Key provided: {key} (Authorization: {sent})"
        return web.json_response({"error": {"type": "invalid_request_error", "message": message}}, status=401)

    with capture_logs() as events:
        gw = await _sync_reading(make_gateway, aiohttp_server, quote)
        last_error = await _error_when_failing(gw)
        body = {"kind": "create", "sync_id": SYNC, "collection_id": "stripe:customer", "records": [{"data": {}}]}
        headers = gw.auth(await gw.token("writer", ["mutations"]))
        async with gw.client.post("/v1/mutations/run", json=body, headers=headers) as resp:
            status, answer = resp.status, await resp.text()
    expected = "Error: Stripe rejected the credential: `Invalid API Key provided: *** (Authorization: ***)`"
    assert last_error == expected
    assert status == 502 and expected in answer, answer
    assert any(expected in str(event) for event in events), "the poller logs the failure"
    for leak in leaks:
        assert leak not in last_error and leak not in answer
        assert not [event for event in events if leak in str(event)]
