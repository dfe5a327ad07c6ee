"""Several real ``gateway serve`` processes on one PostgreSQL and one Redis keep every promise together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.pacing.bucket import worst_excess
from gateway.sandbox import SANDBOX, run_sandbox, stripe
from gateway.sandbox.common import Knobs
from gateway.sandbox.generic import GenericState, create_generic_app
from tests.ops.process import Deployment, GatewayProcess, start_gateway
from tests.support import poll

FAST = {"rate": 1000, "per": 1, "burst": 1000}
PAST = "2020-01-01T00:00:00Z"
JITTER = 0.05  # s: the counting upstream and three gateways share a busy 2-core machine


@dataclass
class Cluster:
    replicas: list[GatewayProcess]
    session: aiohttp.ClientSession
    token: str

    async def call(self, replica: int, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        async with self.session.request(method, self.replicas[replica].url + path, headers=headers, **kwargs) as resp:
            return resp.status, await resp.json(content_type=None)

    async def create(self, kind: str, body: dict[str, Any]) -> None:
        status, answer = await self.call(0, "POST", f"/v1/{kind}", json=body)
        assert status == 201, answer


ClusterFactory = Callable[[int], Awaitable[Cluster]]


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str) -> AsyncIterator[ClusterFactory]:
    """``await cluster(n)``: n migrated replicas sharing PostgreSQL and Redis pacing, and an admin token."""
    async with AsyncExitStack() as stack:

        async def start(count: int) -> Cluster:
            pacing = {"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix}
            sections = {"store": {"url": pg_url}, "pacing": pacing, "log": {"format": "json"}}
            deployment = Deployment.create(tmp_path, sections)
            await deployment.cli("migrate")
            token = await deployment.cli("tokens", "create", "--name", "admin", "--scope", "admin")
            replicas = await asyncio.gather(
                *(stack.enter_async_context(start_gateway(deployment, tmp_path, name=f"r{i}")) for i in range(count))
            )
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
            return Cluster(list(replicas), session, token)

        yield start


def counting_app(arrivals: list[float]) -> web.Application:
    """An upstream that only notes when each call arrived."""

    async def hit(_request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/hit", hit)
    return app


async def test_pacing_bound_holds_for_the_sum_of_replicas(cluster: ClusterFactory) -> None:
    """Calls fired at three replicas reach the upstream within burst + rate*T/per in every window T."""
    arrivals: list[float] = []
    async with run_sandbox(counting_app(arrivals)) as upstream:
        c = await cluster(3)
        limit = {"rate": 10, "per": 1, "burst": 5, "max_wait": 30}
        await c.create("credentials", {"id": "paced", "provider": "rest", "base_url": upstream,
                                       "auth": {"type": "bearer", "token": "t" * 16}, "rate_limit": limit})  # fmt: skip
        calls = [c.call(i % 3, "GET", "/v1/proxy/credential/paced/hit") for i in range(45)]
        assert [status for status, _ in await asyncio.gather(*calls)] == [200] * 45
    assert len(arrivals) == 45
    assert worst_excess(arrivals, rate=10, per=1, burst=5, slack=JITTER) <= 0
    assert max(arrivals) - min(arrivals) >= (45 - 5) / 10 - 2 * JITTER  # it was paced, not merely allowed


async def test_oauth_refresh_is_single_flight_across_replicas(cluster: ClusterFactory) -> None:
    """When every replica sees the expired token at once, the token endpoint is called exactly once."""
    state = GenericState(token_delay=0.3)
    async with run_sandbox(create_generic_app(state)) as upstream:
        c = await cluster(2)
        auth = {"type": "oauth2", "access_token": "expired-token", "refresh_token": state.refresh_token,
                "token_url": f"{upstream}/oauth/token", "client_id": state.client_id,
                "client_secret": state.client_secret, "expires_at": PAST}  # fmt: skip
        await c.create("credentials", {"id": "oauth", "provider": "rest", "base_url": f"{upstream}/protected",
                                       "auth": auth, "rate_limit": FAST})  # fmt: skip
        calls = [c.call(i % 2, "GET", "/v1/proxy/credential/oauth/x") for i in range(40)]
        assert [status for status, _ in await asyncio.gather(*calls)] == [200] * 40
    assert state.refreshes == 1


async def stripe_sync(c: Cluster, app: web.Application) -> None:
    auth = {"type": "basic", "username": stripe.DEFAULT_KEY, "password": ""}
    await c.create("credentials", {"id": "c-stripe", "provider": "stripe", "base_url": app[SANDBOX].base_url,
                                   "auth": auth, "rate_limit": FAST})  # fmt: skip
    await c.create("syncs", {"id": "s-stripe", "credential_id": "c-stripe", "collections": ["stripe:customer"]})


def create_body(**extra: Any) -> dict[str, Any]:
    record = {"data": {"name": "Paul Atreides", "email": "paul@arrakis.org"}}
    return {"kind": "create", "sync_id": "s-stripe", "collection_id": "stripe:customer", "records": [record], **extra}


async def test_idempotency_key_on_two_replicas_writes_once(cluster: ClusterFactory) -> None:
    """The same Idempotency-Key sent to two replicas at once makes one upstream write; both get its answer."""
    app = stripe.create_app(knobs=Knobs(latency=0.3))
    async with run_sandbox(app):
        c = await cluster(2)
        await stripe_sync(c, app)
        headers = {"Idempotency-Key": "order-42"}
        first, second = await asyncio.gather(
            *(c.call(i, "POST", "/v1/mutations/run", json=create_body(), headers=headers) for i in range(2))
        )
    assert first[0] == second[0] == 200
    assert first[1] == second[1]
    writes = [r for r in app[SANDBOX].requests if r.method == "POST" and r.path == "/v1/customers"]
    assert len(writes) == 1


async def test_await_on_one_replica_returns_after_an_ack_on_another(cluster: ClusterFactory) -> None:
    """A mutation awaiting a pull consumer on replica A returns 200 once that consumer acks on replica B."""
    app = stripe.create_app()
    async with run_sandbox(app):
        c = await cluster(2)
        await stripe_sync(c, app)
        await c.create("consumers", {"id": "reader", "kind": "pull"})
        body = create_body(await_consumer_ids=["reader"], await_consumers_timeout=20000)
        mutation = asyncio.create_task(c.call(0, "POST", "/v1/mutations/run", json=body))
        received: list[str] = []

        async def receive() -> bool:
            _, answer = await c.call(1, "POST", "/v1/consumers/reader/receive", json={"wait_for": 1000})
            received.extend(item["ack_id"] for item in answer["data"])
            return bool(received)

        await poll("replica B received the mutation's event", receive)
        assert not mutation.done()
        status, answer = await c.call(1, "POST", "/v1/consumers/reader/ack", json={"ack_ids": received})
        assert status == 200, answer
        status, answer = await asyncio.wait_for(mutation, 15)
    assert status == 200, answer
    assert answer["records"][0]["data"]["email"] == "paul@arrakis.org"
