"""max_concurrency on the Redis backend: one limit for every replica, leases renewed, crashes forgotten."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.errors import BackendUnavailable, RateLimited
from gateway.observability.metrics import Metrics
from gateway.pacing.pacer import GatewayPacer
from tests.pacing.conftest import make_credential
from tests.pacing.test_redis import DEAD_REDIS, FlakyLink
from tests.support import poll, scrape

TTL = 2.0  # lease TTL of these tests' pacers (production: 30 s); renewed every TTL/3, so a stall under 1.3 s is safe
CREDENTIAL = make_credential("shared", rate=1000, max_concurrency=2)
ONE_PERMIT = make_credential("single", rate=1000, max_concurrency=1)


@pytest.fixture
def replica(make_pacer: Callable[..., Any], redis_url: str, redis_prefix: str) -> Callable[..., Any]:
    """Started pacers on the same Redis and key prefix (replicas), lease TTL ``TTL``; closed at the end."""

    async def factory(*, metrics: Metrics | None = None, **pacing: Any) -> GatewayPacer:
        redis = {"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix}
        pacer: GatewayPacer = await make_pacer(pacing={**redis, **pacing}, permit_ttl=TTL, metrics=metrics)
        return pacer

    return factory


@pytest.fixture
async def leases(redis_url: str, redis_prefix: str) -> AsyncIterator[Callable[[str], Any]]:
    """Live leases of a credential, read straight from Redis (what every replica counts)."""
    client = aioredis.from_url(redis_url)

    async def count(credential_id: str) -> int:
        key = f"{redis_prefix}:{{cred:{credential_id}}}:cred:{credential_id}:permits"
        seconds, micros = await client.time()
        return int(await client.zcount(key, f"({seconds * 1000 + micros // 1000}", "+inf"))

    yield count
    await client.aclose()


async def test_two_replicas_share_one_limit(replica: Any, leases: Any) -> None:
    """Two permits held on A: B's call waits, and gets the permit A gives back, never a third one."""
    a, b = await replica(), await replica()
    held = [await a.acquire(CREDENTIAL, "/"), await a.acquire(CREDENTIAL, "/")]
    third = asyncio.ensure_future(b.acquire(CREDENTIAL, "/"))
    for _ in range(10):  # B keeps polling meanwhile and is never granted
        assert not third.done()
        assert await leases("shared") == 2
        await asyncio.sleep(0.02)  # poll interval: B must stay refused over several of its polls
    held.pop().release()
    permit = await asyncio.wait_for(third, 5)
    assert await leases("shared") == 2
    for granted in [*held, permit]:
        granted.release()
    await poll("every lease released", lambda: _zero(leases("shared")), 5)


async def test_a_call_longer_than_the_ttl_keeps_its_permit(replica: Any, leases: Any) -> None:
    """Leases held for 3 x TTL are renewed: another replica is refused the whole time."""
    metrics = Metrics()
    a, b = await replica(), await replica(metrics=metrics)
    held = [await a.acquire(CREDENTIAL, "/"), await a.acquire(CREDENTIAL, "/")]
    started = time.monotonic()
    with pytest.raises(RateLimited, match="max_wait"):
        await b.acquire(CREDENTIAL, "/", max_wait=3 * TTL)
    assert time.monotonic() - started >= 3 * TTL
    assert await leases("shared") == 2
    assert scrape(metrics.registry, "gateway_pacing_rejections_total", provider="rest") == 1
    for permit in held:
        permit.release()


async def test_a_crashed_replicas_permit_comes_back_after_the_ttl(replica: Any, leases: Any) -> None:
    """A holder that stops renewing (closed, never released) stops counting within the TTL."""
    crashed, survivor = await replica(), await replica()
    await crashed.acquire(ONE_PERMIT, "/")
    await crashed.close()  # stops its keeper; the lease stays in Redis
    assert await leases("single") == 1
    permit = await survivor.acquire(ONE_PERMIT, "/", max_wait=10)
    assert 0.3 * TTL <= permit.waited <= 5
    permit.release()


async def test_a_waiter_beyond_max_wait_is_refused_and_leaves_the_queue(replica: Any) -> None:
    """max_wait bounds the wait for a permit; the refused waiter no longer blocks the next caller."""
    pacer = await replica()
    holder = await pacer.acquire(ONE_PERMIT, "/")
    started = time.monotonic()
    with pytest.raises(RateLimited, match="max_wait"):
        await pacer.acquire(ONE_PERMIT, "/", max_wait=0.2)
    assert 0.2 <= time.monotonic() - started < 5
    assert (await pacer.describe(ONE_PERMIT))["queue_depth"] == 0
    holder.release()
    assert (await asyncio.wait_for(pacer.acquire(ONE_PERMIT, "/", max_wait=5), 5)).waited < 2


async def test_waiters_in_one_replica_are_served_in_arrival_order(replica: Any) -> None:
    """FIFO inside a process: with one permit, queued callers get it in the order they came."""
    pacer = await replica()
    holder = await pacer.acquire(ONE_PERMIT, "/")
    order: list[int] = []

    async def call(i: int) -> None:
        permit = await pacer.acquire(ONE_PERMIT, "/")
        order.append(i)
        permit.release()

    waiters = []
    for i in range(5):
        waiters.append(asyncio.ensure_future(call(i)))
        await poll(f"waiter {i} queued", lambda: _queued(pacer) == i + 1, 5)
    holder.release()
    await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert order == list(range(5))


async def test_cancelled_callers_give_their_permits_back(replica: Any, leases: Any) -> None:
    """A cancelled waiter leaves the queue and takes no permit; a released one comes back."""
    pacer = await replica()
    holder = await pacer.acquire(ONE_PERMIT, "/")
    waiter = asyncio.ensure_future(pacer.acquire(ONE_PERMIT, "/"))
    await poll("the waiter queued", lambda: _queued(pacer) == 1, 5)
    waiter.cancel()
    await poll("the cancelled waiter gone", lambda: _queued(pacer) == 0, 5)
    # its place in the shared queue is removed by a Redis call that a loaded machine may run late
    await poll("the shared queue empty", lambda: _zero(_depth(pacer)), 10)
    holder.release()
    await poll("the permit released", lambda: _zero(leases("single")), 5)
    assert await leases("single") == 0


async def test_redis_down_under_the_reject_policy_refuses_calls_with_a_limit(make_pacer: Any) -> None:
    """Policy reject: a call that needs a shared permit gets BackendUnavailable (503)."""
    pacer = await make_pacer(pacing={"backend": "redis", "redis_url": DEAD_REDIS, "on_backend_error": "reject"})
    with pytest.raises(BackendUnavailable):
        await pacer.acquire(ONE_PERMIT, "/")


async def test_redis_lost_under_the_local_policy_limits_in_process(replica: Any, redis_url: str) -> None:
    """Policy local: Redis gone while asking for a permit, the in-process permits take over."""
    link = FlakyLink(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    await link.up()
    metrics = Metrics()
    pacer = await replica(metrics=metrics, redis_url=f"redis://127.0.0.1:{link.port}/0", on_backend_error="local")
    await link.down()
    permit = await pacer.acquire(ONE_PERMIT, "/")
    assert (await pacer.describe(ONE_PERMIT))["backend"] == "local"
    with pytest.raises(RateLimited, match="max_wait"):  # the in-process queue: permit and slot together
        await pacer.acquire(ONE_PERMIT, "/", max_wait=0.05)
    permit.release()
    (await pacer.acquire(ONE_PERMIT, "/", max_wait=1)).release()
    assert scrape(metrics.registry, "gateway_pacing_backend_fallbacks_total") == 1


def _queued(pacer: GatewayPacer) -> int:
    return sum(pacer._queued.values())


async def _depth(pacer: GatewayPacer) -> int:
    return int((await pacer.describe(ONE_PERMIT))["queue_depth"])


async def _zero(count: Any) -> bool:
    return int(await count) == 0
