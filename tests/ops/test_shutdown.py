"""SIGTERM drains a real ``gateway serve`` process: in-flight requests finish, new ones are refused,
long-polls answer at once, and the process exits 0 within ``server.shutdown_timeout``."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.sandbox import run_sandbox, stripe
from gateway.sandbox.generic import GenericState, create_generic_app
from tests.ops.process import Deployment, GatewayProcess, start_gateway
from tests.support import poll

IN_FLIGHT = 200
UPSTREAM_DELAY = 3.0  # seconds the upstream holds each request: the window SIGTERM lands in
MARGIN = 3.0  # seconds of process teardown allowed beyond shutdown_timeout on a busy machine


class Client:
    """A gateway process in front of the generic upstream, with a token for it."""

    def __init__(self, gateway: GatewayProcess, session: aiohttp.ClientSession, token: str) -> None:
        self.gateway, self.session, self.token = gateway, session, token

    async def post(self, path: str, body: object) -> tuple[int, str]:
        return await self.request("POST", path, json=body)

    async def request(self, method: str, path: str, **kwargs: object) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.request(method, self.gateway.url + path, headers=headers, **kwargs) as resp:  # type: ignore[arg-type]
            return resp.status, await resp.text()

    async def raw_post(self, path: str, body: object) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Send a POST byte for byte and leave the answer to be read: the caller knows it was sent."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.gateway.port)
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + payload)
        await writer.drain()
        return reader, writer

    async def terminate(self) -> float:
        """Send SIGTERM; the monotonic time it was sent."""
        self.gateway.proc.send_signal(signal.SIGTERM)
        return time.monotonic()


@asynccontextmanager
async def gateway_before(
    tmp_path: Path, state: GenericState, *, shutdown_timeout: float, extra: dict[str, list[Any]] | None = None
) -> AsyncIterator[Client]:
    """``gateway serve`` with credential ``slow`` on the generic upstream, a pull consumer ``reader``, and ``extra``."""
    extra = extra or {}
    async with run_sandbox(create_generic_app(state)) as upstream:
        credential = {
            "id": "slow",
            "provider": "rest",
            "base_url": upstream,
            "auth": {"type": "bearer", "token": "upstream-secret-token"},
            "rate_limit": {"rate": 100000, "per": 1, "burst": 100000},
        }
        sections = {
            "server": {"shutdown_timeout": shutdown_timeout},
            "store": {"url": f"sqlite:///{tmp_path / 'gateway.db'}"},
            "log": {"format": "json"},
            "credentials": [credential, *extra.get("credentials", [])],
            "syncs": extra.get("syncs", []),
            "consumers": [{"id": "reader", "kind": "pull"}, *extra.get("consumers", [])],
        }
        deployment = Deployment.create(tmp_path, sections)
        token = await deployment.cli("tokens", "create", "--name", "drain", "--scope", "proxy,consumers,mutations")
        async with (
            start_gateway(deployment, tmp_path) as gateway,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session,
        ):
            yield Client(gateway, session, token)


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_sigterm_finishes_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    """200 slow in-flight proxied requests all get 200 after SIGTERM, new connections are refused, exit is 0."""
    state = GenericState()
    async with gateway_before(tmp_path, state, shutdown_timeout=15) as client:
        path = f"/v1/proxy/credential/slow/slow?delay={UPSTREAM_DELAY}"
        calls = [asyncio.create_task(client.request("GET", path)) for _ in range(IN_FLIGHT)]
        await poll("the upstream received every request", lambda: state.requests >= IN_FLIGHT, 30)
        sent = await client.terminate()
        await poll("new connections are refused", lambda: refused(client.gateway.port), UPSTREAM_DELAY)
        assert not all(c.done() for c in calls), "refusal must be observed while requests are in flight"
        results = await asyncio.gather(*calls)
        assert [status for status, _ in results] == [200] * IN_FLIGHT
        assert all('"slow": true' in body for _, body in results)
        assert await client.gateway.wait_exit(15) == 0
        assert time.monotonic() - sent < 15


async def test_sigterm_answers_long_polls_at_once(tmp_path: Path) -> None:
    """A receive long-polling for a minute answers 200 with no events right after SIGTERM; the exit follows."""
    async with gateway_before(tmp_path, GenericState(), shutdown_timeout=20) as client:
        reader, writer = await client.raw_post("/v1/consumers/reader/receive", {"wait_for": 60000})
        try:
            # A full round trip on a second connection: by then the server has read the long-poll too.
            assert (await client.request("GET", "/v1/proxy/credential/slow/echo/x"))[0] == 200
            sent = await client.terminate()
            answer = await asyncio.wait_for(reader.read(), MARGIN)
        finally:
            writer.close()
            await writer.wait_closed()
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body) == {"data": []}
        assert await client.gateway.wait_exit(MARGIN) == 0
        assert time.monotonic() - sent < MARGIN


def hanging_sink(received: list[bytes]) -> web.Application:
    """A webhook endpoint that takes every delivery and never answers."""

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.read())
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_post("/hook", hook)
    return app


async def test_work_outliving_shutdown_timeout_does_not_delay_the_exit(tmp_path: Path) -> None:
    """A proxied call and a webhook delivery still running when shutdown_timeout ends are cut; exit 0 is on time."""
    state, received = GenericState(), list[bytes]()
    timeout = 6.0  # without a shared budget the exit would take about twice this
    stripe_app = stripe.create_app()
    async with run_sandbox(hanging_sink(received)) as sink, run_sandbox(stripe_app) as stripe_url:
        extra: dict[str, list[Any]] = {
            "credentials": [{"id": "c-stripe", "provider": "stripe", "base_url": stripe_url,
                             "auth": {"type": "basic", "username": stripe.DEFAULT_KEY, "password": ""}}],
            "syncs": [{"id": "s-stripe", "credential_id": "c-stripe", "collections": ["stripe:customer"]}],
            "consumers": [{"id": "hooks", "kind": "webhook", "url": f"{sink}/hook", "secret": "whsec_" + "A" * 24,
                           "timeout": 300}],
        }  # fmt: skip
        async with gateway_before(tmp_path, state, shutdown_timeout=timeout, extra=extra) as client:
            record = {"data": {"name": "Paul", "email": "paul@arrakis.org"}}
            body = {"kind": "create", "sync_id": "s-stripe", "collection_id": "stripe:customer", "records": [record]}
            assert (await client.post("/v1/mutations/run", body))[0] == 200
            await poll("the webhook delivery is in flight", lambda: len(received) == 1, 20)
            stuck = asyncio.create_task(client.request("GET", "/v1/proxy/credential/slow/slow?delay=60"))
            await poll("the upstream received the call", lambda: state.requests >= 1, 10)
            sent = await client.terminate()
            assert await client.gateway.wait_exit(timeout + MARGIN) == 0
            assert time.monotonic() - sent < timeout + MARGIN
            with pytest.raises(aiohttp.ClientError):  # disconnected (a GET may be retried: then refused)
                await asyncio.wait_for(stuck, MARGIN)
