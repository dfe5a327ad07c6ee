"""Slow and numerous clients: cut off by the configured timeouts and cap while normal clients are served.

The timeouts are configured small (0.5 s) so that clients sending one byte a second are cut off
within a couple of seconds; the long run (1,000 clients, default timeouts) is the same code.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.conftest import Gateway, GatewayFactory
from tests.upstream.helpers import add_credential, start_upstream

FAST = {"header_timeout": 0.5, "body_idle_timeout": 0.5}


async def _drip(gw: Gateway, request: bytes) -> tuple[float, bytes]:
    """Send ``request`` a byte a second until the gateway answers or closes: (seconds, answer)."""
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    started = time.monotonic()
    answer = b""
    try:
        for byte in request:
            writer.write(bytes([byte]))
            try:
                answer = await asyncio.wait_for(reader.read(65536), 1.0)  # the pace: wait for the server
            except TimeoutError:
                continue
            except ConnectionError:
                break
            if answer:
                assert await asyncio.wait_for(reader.read(65536), 5) == b""  # answered, then closed
            break
        return time.monotonic() - started, answer
    finally:
        writer.close()


async def _served(gw: Gateway, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        resp = await gw.client.get("/v1/credentials", headers=gw.auth())
        statuses.append(resp.status)
    return statuses


async def test_slow_heads_are_cut_off_while_normal_clients_are_served(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(server=FAST)
    head = f"GET /v1/credentials HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.admin_token}\r\n\r\n".encode()
    slow = [asyncio.create_task(_drip(gw, head)) for _ in range(100)]
    statuses = await _served(gw, 20)
    results = await asyncio.gather(*slow)
    assert statuses == [200] * 20
    assert all(answer == b"" for _, answer in results)  # closed, never answered
    # 0.5 s timeout; at a byte a second a head would take over a minute (the bound allows for a loaded box)
    assert max(seconds for seconds, _ in results) < 30


async def test_a_slow_json_body_gets_408(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(server=FAST)
    head = (
        f"POST /v1/credentials HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.admin_token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 60\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    writer.write(head + b'{"id": ')
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(65536), 30)  # without the idle timeout: no answer, ever
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == "request_timeout"
    assert time.monotonic() - started < 30


async def test_a_slow_proxy_body_holds_no_pacing_slot(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """With one concurrency slot, a client stalled in its body (3 s idle timeout) blocks no other call for
    those 3 s and never reaches the upstream."""
    upstream = await start_upstream(aiohttp_server)
    gw = await make_gateway(server={"body_idle_timeout": 3})
    await add_credential(gw, upstream.url + "/echo", rate_limit={"rate": 1000, "per": 1, "max_concurrency": 1})
    head = (
        f"POST /v1/proxy/credential/cred-1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.admin_token}\r\n"
        "Content-Length: 40\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    writer.write(head + b"a" * 10)  # then nothing more
    answer = asyncio.create_task(reader.read(65536))
    latencies = []
    while not answer.done():
        started = time.monotonic()
        resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
        assert resp.status == 200
        latencies.append(time.monotonic() - started)
    writer.close()
    assert (await answer).startswith(b"HTTP/1.1 408")
    assert len(latencies) >= 2 and max(latencies) < 2  # never queued behind the stalled client's 3 s
    assert upstream.state.requests == len(latencies)  # the stalled request never went upstream


async def test_connections_past_the_cap_get_503(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(server={"max_connections": 5, "header_timeout": 30})
    idle = [await asyncio.open_connection(gw.client.host, gw.client.port) for _ in range(5)]
    try:
        reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
        answer = await asyncio.wait_for(reader.read(65536), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503")
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body["code"] == "overloaded" and b"Retry-After: 1" in answer
    finally:
        for _, idle_writer in idle:
            idle_writer.close()
