"""Slow and numerous clients: cut off by the configured timeouts and cap while normal clients are served.

The timeouts are configured small (a few seconds at most) so that clients sending one byte a second are
cut off within seconds; with the defaults (10 s, 30 s) the same clients are cut off later.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from typing import Any

import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.support import poll
from tests.upstream.helpers import add_credential, start_upstream

FAST = {"header_timeout": 0.5, "body_idle_timeout": 0.5}
SLOW_CLIENTS = 1_000  # issue 12: 1,000 clients at a byte a second
MiB = 1024 * 1024


async def _drip(
    gw: Gateway, request: bytes, connected: list[None], *, sent_at_once: bytes = b""
) -> tuple[float, bytes]:
    """Send ``sent_at_once``, then ``request`` a byte a second until the gateway answers or closes:
    (seconds from connecting, answer). Appends to ``connected`` once the first bytes are sent."""
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    started = time.monotonic()
    answer = b""
    try:
        writer.write(sent_at_once)
        connected.append(None)
        for byte in request:
            writer.write(bytes([byte]))
            try:
                answer = await asyncio.wait_for(reader.read(65536), 1.0)  # the pace: wait for the server
            except TimeoutError:
                continue
            except ConnectionError:
                break
            if answer:
                assert await _closed(reader)  # answered, then closed
            break
        return time.monotonic() - started, answer
    finally:
        writer.close()


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed the connection without sending more: an end of stream, or a reset when
    it closed with bytes the client had dripped meanwhile still unread (the kernel then resets)."""
    try:
        return await asyncio.wait_for(reader.read(65536), 30) == b""
    except ConnectionResetError:
        return True


async def _served(gw: Gateway, count: int) -> list[float]:
    """Seconds each of ``count`` normal calls took, one after the other (each must be a 200)."""
    latencies = []
    for _ in range(count):
        started = time.monotonic()
        resp = await gw.client.get("/v1/credentials", headers=gw.auth())
        assert resp.status == 200
        latencies.append(time.monotonic() - started)
    return latencies


def _enough_file_descriptors(needed: int) -> None:
    """Both ends of every connection live in this process: raise the soft open-file limit if it is short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        assert hard == resource.RLIM_INFINITY or hard >= needed, f"ulimit -Hn is {hard}, the test needs {needed}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def test_a_thousand_slow_clients_are_cut_off_while_normal_clients_are_served(
    make_gateway: GatewayFactory,
) -> None:
    """Slowloris: half the clients drip a request head, half a JSON body after a complete head, at a
    byte a second; the header timeout closes the first, the body idle timeout answers the second 408,
    and a normal client is served meanwhile within a bound.

    The header timeout (3 s) is well over the body idle timeout (0.5 s): the body clients send their
    heads at once, and a loop busy accepting 1,000 connections may read a head a second or more after
    its connection opened; a 0.5 s header timeout would close such a client before its body's gap
    could be timed (the body clients are also opened first). Each timeout is needed to pass: at a byte
    a second a head or the 60-byte body takes a minute or more, so without the header timeout a head
    client would be answered 200 after the 45 s bound, and without the body idle timeout a body client
    would get a 400 (its 60 bytes cut mid-JSON) after it."""
    _enough_file_descriptors(2 * SLOW_CLIENTS + 512)
    gw = await make_gateway(server={"header_timeout": 3, "body_idle_timeout": 0.5})
    auth = f"Authorization: Bearer {gw.admin_token}\r\n"
    head = f"GET /v1/credentials HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode()
    post = f"POST /v1/credentials HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 60\r\n\r\n".encode()
    connected: list[None] = []
    body = b'{"id": "x"}' * 6
    bodies = [asyncio.create_task(_drip(gw, body, connected, sent_at_once=post)) for _ in range(SLOW_CLIENTS // 2)]
    heads = [asyncio.create_task(_drip(gw, head, connected)) for _ in range(SLOW_CLIENTS // 2)]
    # Normal calls start once every slow client is connected: while the head clients drip, not while
    # this process (both ends of every connection) is busy opening them.
    await poll("the slow clients connected", lambda: len(connected) == SLOW_CLIENTS, 60)
    latencies = await _served(gw, 20)
    head_results, body_results = await asyncio.gather(*heads), await asyncio.gather(*bodies)
    assert all(answer == b"" for _, answer in head_results)  # closed, never answered
    # Every body client was answered 408, which only the body idle timeout sends, or closed without an
    # answer: a loop that saw its head only past the 3 s header timeout closed it, and a 408 sent while
    # the client's dripped bytes were unread can arrive as a reset that discards it (how many do depends
    # on the machine's load: 243 to 500 of 500 were read as 408). Without the body idle timeout none is
    # a 408 and each takes a minute (the time bound below).
    answered = [answer for _, answer in body_results if answer]
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answered)
    assert len(answered) >= SLOW_CLIENTS // 20
    # 3 s and 0.5 s timeouts; at a byte a second a head takes a minute (the bounds allow for a loaded box)
    assert max(seconds for seconds, _ in head_results + body_results) < 45
    assert max(latencies) < 30  # not held up by the slow clients, whose drip would last a minute


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


async def test_a_json_body_slower_than_the_minimum_rate_gets_408(make_gateway: GatewayFactory) -> None:
    """A byte every 0.2 s never leaves a 3 s gap, but averages 5 bytes/s, under the 100 bytes/s minimum:
    cut off after the 3 s grace (without the rate bound the 200-byte body would take 40 s)."""
    gw = await make_gateway(server={"body_idle_timeout": 3, "min_body_rate": 100})
    head = (
        f"POST /v1/credentials HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.admin_token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    writer.write(head)
    started = time.monotonic()
    answer = asyncio.create_task(reader.read(65536))
    for _ in range(200):
        if answer.done():
            break
        writer.write(b" ")
        await asyncio.wait([answer], timeout=0.2)
    writer.close()
    assert (await answer).startswith(b"HTTP/1.1 408")
    assert b"min_body_rate" in await answer
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("length", [40, 3 * MiB], ids=["buffered", "streamed"])
async def test_a_proxy_body_stalled_before_its_first_mib_holds_no_pacing_slot(
    make_gateway: GatewayFactory, aiohttp_server: Any, length: int
) -> None:
    """With one concurrency slot, a client stalled early in its body (5 s idle timeout) blocks no other
    call and never reaches the upstream: the first MiB of every body is read before pacing.

    Its ``Expect: 100-continue`` is answered once its head is routed, so the other calls start only
    after the stalled request is in its handler; had it taken the slot, the first of them would wait
    for its 408 (the order is checked, not a duration)."""
    upstream = await start_upstream(aiohttp_server)
    gw = await make_gateway(server={"body_idle_timeout": 5})
    await add_credential(gw, upstream.url + "/echo", rate_limit={"rate": 1000, "per": 1, "max_concurrency": 1})
    head = (
        f"POST /v1/proxy/credential/cred-1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.admin_token}\r\n"
        f"Expect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    writer.write(head + b"a" * 10)  # then nothing more
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30) == b"HTTP/1.1 100 Continue\r\n\r\n"
    answer = asyncio.create_task(reader.read(65536))
    calls = served_before_408 = 0
    while not answer.done():
        resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
        assert resp.status == 200
        calls += 1
        served_before_408 += not answer.done()
    writer.close()
    assert (await answer).startswith(b"HTTP/1.1 408")
    assert served_before_408 >= 1  # never queued behind the stalled client until its 408
    assert upstream.state.requests == calls  # the stalled request never went upstream


async def test_a_streamed_upload_slower_than_the_minimum_rate_frees_its_slot(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """Past its first MiB a body streams while its call holds the credential's one concurrency slot; a
    client then trickling 1 KiB every 0.1 s (never idle for the 2 s timeout, but far under 64 KiB/s)
    is cut off after about 2 s + what it sent / 64 KiB/s, so a call queued behind it waits that long,
    not for the 20 s the trickle would go on."""
    upstream = await start_upstream(aiohttp_server)
    gw = await make_gateway(server={"body_idle_timeout": 2, "min_body_rate": 64 * 1024})
    limits = {"rate": 1000, "per": 1, "max_concurrency": 1, "max_wait": 60}
    await add_credential(gw, upstream.url, rate_limit=limits)
    head = (
        f"POST /v1/proxy/credential/cred-1/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gw.admin_token}\r\n"
        f"Content-Length: {3 * MiB}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(gw.client.host, gw.client.port)
    writer.write(head + b"a" * MiB)
    answer = asyncio.create_task(reader.read(65536))

    async def trickle() -> None:
        for _ in range(200):  # 20 s at 10 KiB/s
            writer.write(b"a" * 1024)
            await asyncio.sleep(0.1)  # the client's pace, not a wait for the system under test

    trickling = asyncio.create_task(trickle())
    await poll("the upload reached the upstream", lambda: upstream.state.requests == 1, 30)
    started = time.monotonic()
    resp = await gw.client.get("/v1/proxy/credential/cred-1/echo/x", headers=gw.auth())
    queued = time.monotonic() - started
    assert resp.status == 200
    assert (await asyncio.wait_for(answer, 10)).startswith(b"HTTP/1.1 408")
    assert b"min_body_rate" in await answer
    assert queued < 12  # 2 s + about 0.3 s of rate credit, with room for a loaded machine; not 20 s
    trickling.cancel()
    writer.close()


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
