"""An upstream's JSON answer to a mutation or a sync is read strictly, as clients' bodies are.

JSON that no record can hold (nested past ``server.max_json_depth``, ``NaN``, ``Infinity``, ``1e400``)
reads as "not JSON" (``body is None``, the status still tells the story) instead of raising
``RecursionError`` or carrying a value PostgreSQL's ``jsonb`` refuses into the stream.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from gateway.http import appkeys
from tests.conftest import GatewayFactory
from tests.upstream.helpers import add_credential

HOSTILE = {
    "deep": b'{"results": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "nan": b'{"results": [{"id": "1", "amount": NaN}]}',
    "infinity": b'{"results": [{"id": "1", "amount": -Infinity}]}',
    "overflow": b'{"results": [{"id": "1", "amount": 1e400}]}',
    "too_deep_for_the_limit": b'{"results": ' + b"[" * 65 + b"]" * 65 + b"}",
}
FINE = b'{"results": ' + b"[" * 60 + b"1.5" + b"]" * 60 + b"}"


async def _answering(aiohttp_server: Any, body: bytes) -> str:
    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/")


@pytest.mark.parametrize("kind", sorted(HOSTILE))
async def test_json_no_record_can_hold_reads_as_no_json(
    make_gateway: GatewayFactory, aiohttp_server: Any, kind: str
) -> None:
    gw = await make_gateway()
    await add_credential(gw, await _answering(aiohttp_server, HOSTILE[kind]))
    upstream = gw.app[appkeys.UPSTREAM]
    answer = await upstream.request_json(await upstream.credentials.credential("cred-1"), "GET", "records")
    assert answer.status == 200
    assert answer.body_json is None


async def test_json_within_the_limits_reads_as_sent(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    gw = await make_gateway()
    await add_credential(gw, await _answering(aiohttp_server, FINE))
    upstream = gw.app[appkeys.UPSTREAM]
    answer = await upstream.request_json(await upstream.credentials.credential("cred-1"), "GET", "records")
    value: Any = answer.body_json["results"]
    for _ in range(60):
        value = value[0]
    assert value == 1.5


async def test_an_error_quoting_a_token_refreshed_on_the_way_does_not_show_it(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """An expired OAuth2 token is refreshed before the call: the error that quotes the new token (which
    the caller's credential never held) is scrubbed of it, as of the credential's other secrets."""
    fresh = "fresh-access-token-0123456789"

    async def token(_request: web.Request) -> web.Response:
        return web.json_response({"access_token": fresh, "expires_in": 3600})

    async def quote(request: web.Request) -> web.Response:
        return web.json_response({"message": f"bad request for {request.headers['Authorization']}"}, status=400)

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/{tail:.*}", quote)
    server = await aiohttp_server(app, host="127.0.0.1")
    url = str(server.make_url("")).rstrip("/")
    gw = await make_gateway()
    auth = {"type": "oauth2", "access_token": "stale-access-token", "refresh_token": "refresh-token-0",
            "token_url": f"{url}/oauth/token", "client_id": "client", "client_secret": "client-secret-0",
            "expires_at": "2020-01-01T00:00:00Z"}  # fmt: skip
    await add_credential(gw, url, auth)
    upstream = gw.app[appkeys.UPSTREAM]
    answer = await upstream.request_json(await upstream.credentials.credential("cred-1"), "GET", "records")
    assert answer.status == 400
    assert answer.body_json == {"message": "bad request for ***"}
