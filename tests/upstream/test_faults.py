"""Upstream faults become the spec's errors before the first byte, and truncation after it."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayFactory
from tests.upstream.helpers import Upstream, add_credential, start_upstream


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    return await start_upstream(aiohttp_server)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(("provider", "name"), [("rest", "REST"), ("stripe", "Stripe"), ("hubspot", "HubSpot")])
async def test_read_timeout_is_504_naming_the_provider(
    make_gateway: GatewayFactory, upstream: Upstream, provider: str, name: str
) -> None:
    """An upstream slower than the read timeout answers 504 upstream_timeout with the provider's name."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url, provider=provider, timeouts={"read": 0.3})
    resp = await gw.client.get("/v1/proxy/credential/cred-1/slow?delay=3", headers=gw.auth())
    assert resp.status == 504
    body = await resp.json()
    assert body["code"] == "upstream_timeout"
    assert body["error"] == f"Error: {name} API timed out"


async def test_total_timeout_from_provider_config_is_504(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """config.providers[p].timeouts.total bounds the whole exchange."""
    gw = await make_gateway(providers={"rest": {"timeouts": {"total": 0.3}}})
    await add_credential(gw, upstream.url)
    resp = await gw.client.get("/v1/proxy/credential/cred-1/slow?delay=3", headers=gw.auth())
    assert resp.status == 504


async def test_refused_connection_is_502(make_gateway: GatewayFactory) -> None:
    """A closed port answers 502 upstream_unavailable."""
    gw = await make_gateway()
    await add_credential(gw, f"http://127.0.0.1:{_closed_port()}")
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
    assert resp.status == 502
    assert (await resp.json())["code"] == "upstream_unavailable"


async def test_tls_failure_is_502(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """Speaking TLS to a plain-HTTP server is a TLS failure: 502 upstream_unavailable."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url.replace("http://", "https://"))
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
    assert resp.status == 502
    assert (await resp.json())["code"] == "upstream_unavailable"


async def test_stall_after_first_byte_truncates_the_response(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """An upstream that stalls mid-body past the read timeout ends the client's response, not a hang."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url, timeouts={"read": 0.3})
    resp = await gw.client.get("/v1/proxy/credential/cred-1/slow?delay=3&body=1", headers=gw.auth())
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await asyncio.wait_for(resp.read(), 5)


async def test_upstream_429_is_retried_for_a_held_body(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A 429 with Retry-After on a bodiless request is retried after the pause, invisibly to the client."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url)
    upstream.state.throttle = 1
    resp = await gw.client.get("/v1/proxy/credential/cred-1/limited/x", headers=gw.auth())
    assert resp.status == 200
    assert upstream.state.requests == 2
    assert float(resp.headers["x-gateway-pacing-wait-ms"]) >= 500


async def test_upstream_429_is_relayed_for_a_streamed_body(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A 429 on a request whose body was streamed (not held) reaches the client unchanged."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url)
    upstream.state.throttle = 1

    async def body() -> Any:
        yield b"x" * 1000

    resp = await gw.client.post("/v1/proxy/credential/cred-1/limited/x", data=body(), headers=gw.auth())
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "1"
    assert (await resp.json()) == {"error": "rate_limited"}
    assert upstream.state.requests == 1


async def test_upstream_metrics_use_bounded_labels(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """Upstream calls are counted by provider and status, never by path or id."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo", cid="cred-secret-id")
    await gw.client.get("/v1/proxy/credential/cred-secret-id/some/raw/path", headers=gw.auth())
    text = await (await gw.client.get("/metrics")).text()
    assert 'gateway_upstream_requests_total{provider="rest",status="200"} 1.0' in text
    assert "gateway_upstream_request_duration_seconds_count" in text
    assert "some/raw/path" not in text and "cred-secret-id" not in text


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 099 Odd\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nhi",
    ],
)
async def test_an_answer_without_a_valid_final_status_is_502(make_gateway: GatewayFactory, head: bytes) -> None:
    """Relayed, a 101 (stripped of its Upgrade, hop-by-hop) told the client the connection had switched
    protocols, and "HTTP/1.1 99" was a status line no client parses."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await make_gateway()
        await add_credential(gw, f"http://127.0.0.1:{port}")
        resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
        assert resp.status == 502, await resp.text()
        body = await resp.json()
        assert body["code"] == "upstream_unavailable" and "no valid final HTTP status" in body["error"]
    finally:
        server.close()
        await server.wait_closed()
