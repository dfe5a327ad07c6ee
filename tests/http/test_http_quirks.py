"""HTTP edge cases at the proxy: versionless request lines, repeated headers, forwarding claims, encoded ids."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.upstream.helpers import Upstream, add_credential, add_sync, start_upstream


async def _raw(gw: Gateway, head: str) -> tuple[bytes, dict[str, Any]]:
    """Send ``head`` byte for byte with the admin token; the status line and the JSON body back."""
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    line, _, rest = head.partition("\r\n")
    writer.write(f"{line}\r\nAuthorization: Bearer {gw.admin_token}\r\nConnection: close\r\n{rest}\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status_line, _, rest_of_answer = answer.partition(b"\r\n")
    return status_line, json.loads(rest_of_answer.partition(b"\r\n\r\n")[2])


async def _proxied(make_gateway: GatewayFactory, aiohttp_server: Any, **server: Any) -> tuple[Gateway, Upstream]:
    upstream = await start_upstream(aiohttp_server)
    gw = await make_gateway(server=server)
    await add_credential(gw, upstream.url + "/echo")
    await add_sync(gw, "cred-1")
    return gw, upstream


async def test_a_request_line_without_a_version_is_400(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    gw, upstream = await _proxied(make_gateway, aiohttp_server)
    status, body = await _raw(gw, "GET /v1/proxy/credential/cred-1/x\r\n")
    assert b" 400 " in status
    assert body["code"] == "invalid_request" and "no HTTP version" in body["error"]
    assert upstream.state.requests == 0


async def test_repeated_headers_reach_the_upstream_as_sent(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    gw, _ = await _proxied(make_gateway, aiohttp_server)
    status, echoed = await _raw(
        gw, "GET /v1/proxy/credential/cred-1/x HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\nX-a: 3\r\nAccept: a\r\n"
    )
    assert b" 200 " in status
    assert echoed["headers"]["x-a"] == ["1", "2", "3"] and echoed["headers"]["accept"] == ["a"]


CLAIMS = (
    "Forwarded: for=6.6.6.6\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.example\r\nX-Real-IP: 6.6.6.6\r\n"
)


@pytest.mark.parametrize("trusted", [False, True])
async def test_forwarding_claims_pass_only_when_trusted(
    make_gateway: GatewayFactory, aiohttp_server: Any, trusted: bool
) -> None:
    gw, _ = await _proxied(make_gateway, aiohttp_server, trust_forwarded=trusted)
    _, echoed = await _raw(gw, f"GET /v1/proxy/credential/cred-1/x HTTP/1.1\r\nHost: x\r\n{CLAIMS}")
    headers = echoed["headers"]
    if trusted:
        assert headers["x-forwarded-for"] == ["6.6.6.6, 127.0.0.1"]
        assert headers["forwarded"] == ["for=6.6.6.6"] and headers["x-real-ip"] == ["6.6.6.6"]
        assert headers["x-forwarded-host"] == ["evil.example"]
    else:
        assert headers["x-forwarded-for"] == ["127.0.0.1"]  # overwritten with the real peer
        assert not {"forwarded", "x-forwarded-host", "x-real-ip"} & set(headers)


@pytest.mark.parametrize("path", ["/v1/proxy/sync/sync-1%2Fb/x", "/v1/proxy/credential/cred-1%2fb/x"])
async def test_an_encoded_slash_in_an_id_is_400_invalid_path(
    make_gateway: GatewayFactory, aiohttp_server: Any, path: str
) -> None:
    gw, upstream = await _proxied(make_gateway, aiohttp_server)
    status, body = await _raw(gw, f"GET {path} HTTP/1.1\r\nHost: x\r\n")
    assert b" 400 " in status, body
    assert body["code"] == "invalid_path"
    assert upstream.state.requests == 0


@pytest.mark.parametrize("path", ["/v1/proxy/credential/cred-1/x", "/v1/credentials", "/no/such/endpoint"])
async def test_an_unknown_expectation_is_a_json_400_naming_the_header(
    make_gateway: GatewayFactory, aiohttp_server: Any, path: str
) -> None:
    """aiohttp's own answer is a plain-text 417 quoting the header; the gateway's is its JSON error."""
    gw, upstream = await _proxied(make_gateway, aiohttp_server)
    status, body = await _raw(
        gw, f"POST {path} HTTP/1.1\r\nHost: gw\r\nExpect: 200-ok-please\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    assert b" 400 " in status, status
    assert body["code"] == "invalid_request" and body.get("field") == "Expect" and "please" not in body["error"], body
    status, _ = await _raw(
        gw, f"POST {path} HTTP/1.1\r\nHost: gw\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    assert b" 100 " in status  # still answered, then the request goes on
    assert upstream.state.requests == (1 if "proxy" in path else 0)


MUTATION = {"kind": "create", "sync_id": "sync-1", "collection_id": "rest:things", "records": [{"data": {"a": 1}}]}


@pytest.mark.parametrize(
    ("method", "path", "name", "values"),
    [
        ("GET", "/v1/proxy/sync/sync-1/items", "x-gateway-priority", ("high", "low")),
        ("GET", "/v1/proxy/sync/sync-1/items", "x-gateway-cost", ("1", "1")),
        ("POST", "/v1/mutations/run", "Idempotency-Key", ("key-1", "key-2")),
        ("POST", "/v1/tokens", "Content-Encoding", ("identity", "gzip")),
    ],
)
async def test_a_header_the_gateway_reads_sent_twice_is_400_naming_it(
    make_gateway: GatewayFactory, aiohttp_server: Any, method: str, path: str, name: str, values: tuple[str, str]
) -> None:
    """The first value won silently: a client's own ``x-gateway-priority`` beat the one a proxy in front
    appended. Now, as for ``Authorization``, the gateway picks none, in any case, and nothing is sent."""
    gw = await make_gateway()
    upstream = await start_upstream(aiohttp_server)
    await add_sync(gw, await add_credential(gw, upstream.url + "/echo"))
    body = json.dumps(MUTATION if path == "/v1/mutations/run" else {"name": "t", "scopes": ["proxy"]}).encode()
    server = gw.client.server
    head = [f"{method} {path} HTTP/1.1", f"Host: {server.host}:{server.port}", "Connection: close"]
    head += [f"{key}: {value}" for key, value in gw.auth().items()]
    head += [f"{name}: {values[0]}", f"{name.upper()}: {values[1]}", f"Content-Length: {len(body)}"]
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    status, _, payload = answer.partition(b"\r\n\r\n")
    assert status.split(b" ", 2)[1] == b"400", answer
    error = json.loads(payload)
    assert error["code"] == "invalid_request" and error["fields"] == [name], error
    assert upstream.state.requests == 0
