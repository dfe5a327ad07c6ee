"""Bodies stream both ways through the proxy: sizes, framing, limits, slow and vanishing peers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from tests.conftest import GatewayFactory
from tests.support import poll
from tests.upstream.helpers import Upstream, add_credential, raw_request, start_upstream

MIB = 1024 * 1024


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    return await start_upstream(aiohttp_server)


async def _chunks(total: int, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        block = b"y" * min(size, total - sent)
        sent += len(block)
        yield block


@pytest.mark.parametrize("with_length", [False, True])
async def test_download_streams_every_byte(make_gateway: GatewayFactory, upstream: Upstream, with_length: bool) -> None:
    """A chunked or Content-Length download of 16 MiB arrives whole, with the upstream's framing."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url)
    query = "?length=1" if with_length else ""
    resp = await gw.client.get(f"/v1/proxy/credential/cred-1/bytes/{16 * MIB}{query}", headers=gw.auth())
    received = 0
    async for chunk in resp.content.iter_any():
        received += len(chunk)
    assert received == 16 * MIB
    assert (resp.headers.get("Content-Length") == str(16 * MIB)) is with_length


async def _watching_upstream(aiohttp_server: Any) -> tuple[str, asyncio.Event]:
    """An upstream whose ``/upload`` flags the first body bytes it receives, then reads the rest."""
    first_seen = asyncio.Event()

    async def upload(request: web.Request) -> web.Response:
        digest, received = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            first_seen.set()
            digest.update(chunk)
            received += len(chunk)
        return web.json_response({"received": received, "sha256": digest.hexdigest()})

    app = web.Application()
    app.router.add_post("/upload", upload)
    server = await aiohttp_server(app, host="127.0.0.1")
    return str(server.make_url("")).rstrip("/"), first_seen


async def _held_back(total: int, first_seen: asyncio.Event, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``total`` bytes whose last chunk leaves only once the upstream saw the first: a buffering proxy stalls."""
    sent = 0
    while sent < total:
        block = b"z" * min(size, total - sent)
        if sent + len(block) >= total:
            await asyncio.wait_for(first_seen.wait(), 10)
        sent += len(block)
        yield block


async def test_upload_with_content_length_streams_to_the_upstream(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """A 12 MiB Content-Length upload reaches the upstream intact, its first bytes before the client sent its last."""
    url, first_seen = await _watching_upstream(aiohttp_server)
    gw = await make_gateway()
    await add_credential(gw, url)
    total = 12 * MIB
    headers = {**gw.auth(), "Content-Length": str(total)}
    resp = await gw.client.post(
        "/v1/proxy/credential/cred-1/upload", data=_held_back(total, first_seen), headers=headers
    )
    assert await resp.json() == {"received": total, "sha256": hashlib.sha256(b"z" * total).hexdigest()}


async def test_chunked_upload_streams_to_the_upstream(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """A chunked upload of unknown length reaches the upstream, its first bytes before the client sent its last."""
    url, first_seen = await _watching_upstream(aiohttp_server)
    gw = await make_gateway()
    await add_credential(gw, url)
    resp = await gw.client.post(
        "/v1/proxy/credential/cred-1/upload", data=_held_back(5 * MIB, first_seen), headers=gw.auth()
    )
    assert (await resp.json())["received"] == 5 * MIB


async def test_small_body_is_relayed(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A small JSON body and its content type reach the upstream unchanged."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    resp = await gw.client.post("/v1/proxy/credential/cred-1/x", json={"a": 1}, headers=gw.auth())
    echo = await resp.json()
    assert json.loads(echo["body"]) == {"a": 1}
    assert echo["headers"]["content-type"] == ["application/json"]


async def test_declared_oversized_body_is_413_before_sending(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A Content-Length over server.max_body_bytes answers 413 without contacting the upstream."""
    gw = await make_gateway(server={"max_body_bytes": 1000})
    await add_credential(gw, upstream.url)
    resp = await gw.client.post("/v1/proxy/credential/cred-1/upload", data=b"a" * 1001, headers=gw.auth())
    assert resp.status == 413
    assert (await resp.json())["code"] == "payload_too_large"
    assert upstream.state.requests == 0


async def test_chunked_body_over_the_limit_is_413(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A chunked body that grows past the limit while streaming answers 413."""
    gw = await make_gateway(server={"max_body_bytes": 2 * MIB})
    await add_credential(gw, upstream.url)
    resp = await gw.client.post("/v1/proxy/credential/cred-1/upload", data=_chunks(4 * MIB), headers=gw.auth())
    assert resp.status == 413
    assert (await resp.json())["code"] == "payload_too_large"
    assert upstream.state.received < 4 * MIB


async def test_client_slower_than_the_read_timeout_gets_408(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A client that stops sending its body for longer than the read timeout answers 408."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url, timeouts={"read": 0.3})
    server = gw.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    head = (
        "POST /v1/proxy/credential/cred-1/upload HTTP/1.1\r\n"
        f"Host: x\r\nAuthorization: Bearer {gw.admin_token}\r\nContent-Length: {2 * MIB}\r\n\r\n"
    )
    writer.write(head.encode() + b"a" * 1000)
    answer = await asyncio.wait_for(reader.readuntil(b'"}'), 10)
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"request_timeout" in answer


async def test_client_leaving_mid_download_cancels_the_upstream(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """When the client disconnects mid-response, the upstream's connection is dropped too."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url)
    async with aiohttp.ClientSession() as session:
        url = gw.client.make_url(f"/v1/proxy/credential/cred-1/bytes/{1024 * MIB}")
        resp = await session.get(url, headers=gw.auth())
        assert len(await resp.content.readexactly(MIB)) == MIB
        resp.close()
    await poll("the upstream saw the download aborted", lambda: upstream.state.aborted_downloads == 1)


async def test_client_leaving_before_the_body_ends_is_not_an_error(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """A client gone by the time the answer ends is logged as an interrupted body, not a 500."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url)
    server = gw.client.server
    with capture_logs() as events:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        head = "GET /v1/proxy/credential/cred-1/slow?delay=0.3&body=late HTTP/1.1\r\nHost: x\r\n"
        writer.write(f"{head}Authorization: Bearer {gw.admin_token}\r\n\r\n".encode())
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200")
        linger_off = struct.pack("ii", 1, 0)  # close with a reset, as wrk and impatient clients do
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_off)
        writer.close()  # gone before the upstream ends its (empty, chunked) body
        await writer.wait_closed()
        await poll("the request logged", lambda: any(e["event"] == "request" for e in events))
    assert [e["event"] for e in events if e["log_level"] == "error"] == []
    assert any(e["event"] == "proxy_body_interrupted" for e in events)
    assert [e["status"] for e in events if e["event"] == "request"] == [200]


async def test_upstream_dying_mid_body_ends_the_client_response(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """An upstream that drops the connection mid-body truncates the client's response, without a hang."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url)
    resp = await gw.client.get("/v1/proxy/credential/cred-1/die?after=5000", headers=gw.auth())
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(resp.read(), 10)


async def test_invalid_header_value_is_refused_without_upstream_traffic(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """A header value with a bare control character is rejected with 400 and never forwarded."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    status, _ = await raw_request(gw, "GET /v1/proxy/credential/cred-1/x HTTP/1.1", {"X-Bad": "a\x01b"})
    assert status == 400
    assert upstream.state.requests == 0
