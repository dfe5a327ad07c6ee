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
