"""SIGTERM drains a real ``gateway serve`` process: in-flight requests finish, new ones are refused."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp

from gateway.sandbox import run_sandbox
from gateway.sandbox.generic import GenericState, create_generic_app
from tests.ops.process import Deployment, poll, start_gateway

IN_FLIGHT = 200
UPSTREAM_DELAY = 3.0  # seconds the upstream holds each request: the window SIGTERM lands in
SHUTDOWN_TIMEOUT = 15.0


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
    async with run_sandbox(create_generic_app(state)) as upstream:
        credential = {
            "id": "cred-slow",
            "provider": "rest",
            "base_url": upstream,
            "auth": {"type": "bearer", "token": "upstream-secret-token"},
            "rate_limit": {"rate": 100000, "per": 1, "burst": 100000},
        }
        deployment = Deployment.create(
            tmp_path,
            {
                "server": {"shutdown_timeout": SHUTDOWN_TIMEOUT},
                "store": {"url": f"sqlite:///{tmp_path / 'gateway.db'}"},
                "log": {"format": "json"},
                "credentials": [credential],
            },
        )
        token = await deployment.cli("tokens", "create", "--name", "drain", "--scope", "proxy")
        async with (
            start_gateway(deployment, tmp_path) as gateway,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client,
        ):
            url = f"{gateway.url}/v1/proxy/credential/cred-slow/slow?delay={UPSTREAM_DELAY}"
            headers = {"Authorization": f"Bearer {token}"}

            async def call() -> tuple[int, str]:
                async with client.get(url, headers=headers) as resp:
                    return resp.status, await resp.text()

            calls = [asyncio.create_task(call()) for _ in range(IN_FLIGHT)]
            await poll("the upstream received every request", lambda: state.requests >= IN_FLIGHT, 30)
            gateway.proc.send_signal(signal.SIGTERM)
            end = time.monotonic() + UPSTREAM_DELAY
            while not await refused(gateway.port):
                assert time.monotonic() < end, "the gateway still accepts connections after SIGTERM"
                await asyncio.sleep(0.02)
            assert not all(c.done() for c in calls), "refusal must be observed while requests are in flight"
            results = await asyncio.gather(*calls)
            assert [status for status, _ in results] == [200] * IN_FLIGHT
            assert all('"slow": true' in body for _, body in results)
            assert await gateway.wait_exit(SHUTDOWN_TIMEOUT) == 0
