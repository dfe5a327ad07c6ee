"""Priorities and fair share across replicas on the real Redis: one order for all, dead replicas forgotten."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from gateway.domain.objects import Credential
from gateway.pacing.pacer import GatewayPacer
from gateway.pacing.redis import LEASE_TTL
from gateway.pacing.scheduler import Priority, Share
from tests.pacing.conftest import make_credential

pytestmark = pytest.mark.slow
DEAD_TTL = 2.0  # lease TTL where a replica's death is the point: its places are forgotten this fast


@pytest.fixture
def replicas(make_pacer: Any, redis_url: str, redis_prefix: str) -> Any:
    async def start(n: int, ttl: float = LEASE_TTL) -> list[GatewayPacer]:  # a loaded box's live replica lives on
        pacing = {"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix, "on_backend_error": "reject"}
        return [await make_pacer(pacing=pacing, permit_ttl=ttl) for _ in range(n)]

    return start


async def test_a_high_call_on_one_replica_overtakes_a_thousand_low_calls_on_another(replicas: Any) -> None:
    """20/s: replica A queues 1,000 low calls; replica B's high call goes next: at most a few lows, the
    ones already granted or being granted, go before it (in arrival order it would be some 990)."""
    a, b = await replicas(2)
    credential = make_credential(rate=20, burst=1, max_wait=600)
    lows = [asyncio.ensure_future(a.acquire(credential, "/", share=Share("low", "batch"))) for _ in range(1000)]
    deadline = time.monotonic() + 10
    while (await b.describe(credential))["queued"]["low"] < 990:
        assert time.monotonic() < deadline, "the low calls never queued"
        await asyncio.sleep(0.05)
    granted_before = sum(waiter.done() for waiter in lows)
    await b.acquire(credential, "/", share=Share("high", "app"))
    assert sum(waiter.done() for waiter in lows) - granted_before <= 4
    for waiter in lows:
        waiter.cancel()
    await asyncio.gather(*lows, return_exceptions=True)


async def test_two_tenants_on_two_replicas_share_half_and_half(replicas: Any) -> None:
    """50/s: tenant a floods from replica A, tenant b from replica B; each gets 50% +- 5% of every 100 grants."""
    a, b = await replicas(2)
    credential = make_credential(rate=50, burst=1, max_wait=600)
    order: list[tuple[float, str]] = []

    async def call(pacer: GatewayPacer, tenant: str) -> None:
        await pacer.acquire(credential, "/", share=Share("normal", tenant))
        order.append((time.monotonic(), tenant))

    await asyncio.gather(*(call(pacer, t) for _ in range(150) for pacer, t in ((a, "a"), (b, "b"))))
    tenants = [t for _, t in sorted(order)][:280]  # while both still have calls queued
    assert all(45 <= Counter(tenants[i : i + 100])["a"] <= 55 for i in range(len(tenants) - 99))


@pytest.mark.parametrize(("weight", "share"), [(1.0, 50), (3.0, 75)])
async def test_two_tenants_on_three_replicas_share_by_weight(replicas: Any, weight: float, share: int) -> None:
    """100/s: tenant a (weight 1, then 3), then b (weight 1) flood from all three replicas; a gets its
    weight's share (50%, then 75%) +- 5% of every 100 consecutive grants while both have calls queued
    (in arrival order a would get the first 180)."""
    pacers = await replicas(3)
    credential = make_credential(rate=100, burst=1, max_wait=600)
    order: list[tuple[float, str]] = []

    async def call(pacer: GatewayPacer, tenant: str) -> None:
        await pacer.acquire(credential, "/", share=Share("normal", tenant, weight if tenant == "a" else 1.0))
        order.append((time.monotonic(), tenant))

    await asyncio.gather(*(call(pacer, t) for t in "ab" for pacer in pacers for _ in range(60)))
    tenants = [t for _, t in sorted(order)]
    both = min(len(tenants) - tenants[::-1].index(t) for t in "ab") - 10  # the first to run out, less a margin
    assert both >= 200
    shares = [Counter(tenants[i : i + 100])["a"] for i in range(both - 99)]
    assert share - 5 <= min(shares) and max(shares) <= share + 5, (min(shares), max(shares))


@pytest.mark.parametrize(
    ("share", "dead"),
    [
        (Share("low", "y"), 200),  # another class and tenant: behind A's places by priority only
        (Share("high", "x"), 1000),  # A's tenant and class: behind all 1,000 in FIFO order, more than a
        # script call looks at in one go (not a poll, a third of a lease, per 64 of them)
    ],
)
async def test_a_dead_replicas_queued_calls_hold_the_bucket_back_at_most_one_lease(
    replicas: Any, share: Share, dead: int
) -> None:
    """Replica A queues high calls and stops polling (dies); B's call goes within the lease TTL."""
    a, b = await replicas(2, DEAD_TTL)
    credential = make_credential(rate=5, burst=1, max_wait=600)
    highs = await _queue_highs_then_stop_polling(a, b, credential, dead)
    started = time.monotonic()
    await b.acquire(credential, "/", share=share)
    assert time.monotonic() - started <= DEAD_TTL + 1 / 5 + 0.5
    for waiter in highs:
        waiter.cancel()
    await asyncio.gather(*highs, return_exceptions=True)


async def test_a_stalled_replicas_places_are_passed_over_at_once(replicas: Any) -> None:
    """Replica A queues 200 high calls and stops polling (stalled, its lease alive for 30 s); B's 10
    low calls on 20/s go at the full rate, not behind A's places (granted one by one, nobody to send
    them: 10 s), and A's places keep theirs."""
    a, b = await replicas(2)
    credential = make_credential(rate=20, burst=1, max_wait=600)
    highs = await _queue_highs_then_stop_polling(a, b, credential)
    started = time.monotonic()
    await asyncio.gather(*(b.acquire(credential, "/", share=Share("low", "y")) for _ in range(10)))
    assert time.monotonic() - started <= 10 / 20 + 1.0
    assert (await b.describe(credential))["queued"]["high"] >= 150
    for waiter in highs:
        waiter.cancel()
    await asyncio.gather(*highs, return_exceptions=True)


async def test_concurrency_permits_follow_the_queue_order_across_replicas(replicas: Any) -> None:
    """max_concurrency 1: replica A's low calls wait for the permit C holds; B's high call, queued
    after them, gets it first when C releases it, then the low calls in arrival order."""
    a, b, c = await replicas(3)
    credential = make_credential(rate=1000, max_concurrency=1, max_wait=600)
    holder = await c.acquire(credential, "/")
    order: list[str] = []

    async def call(pacer: GatewayPacer, name: str, priority: Priority) -> None:
        permit = await pacer.acquire(credential, "/", share=Share(priority, name[0]))
        order.append(name)
        permit.release()

    waiting = []
    for i in range(5):
        waiting.append(asyncio.ensure_future(call(a, f"low{i}", "low")))
        await _queued(c, credential, "low", i + 1)
    waiting.append(asyncio.ensure_future(call(b, "high", "high")))
    await _queued(c, credential, "high", 1)
    holder.release()
    await asyncio.wait_for(asyncio.gather(*waiting), 20)
    assert order == ["high", *(f"low{i}" for i in range(5))]


async def _queued(pacer: GatewayPacer, credential: Any, priority: str, n: int) -> None:
    deadline = time.monotonic() + 10
    while (await pacer.describe(credential))["queued"][priority] < n:
        assert time.monotonic() < deadline, f"{n} {priority} calls never queued"
        await asyncio.sleep(0.02)


async def _queue_highs_then_stop_polling(
    a: Any, b: Any, credential: Credential, count: int = 200
) -> list[asyncio.Future[Any]]:
    """Replica A takes the bucket's slot, queues ``count`` high calls, and its pollers stop (it dies or
    stalls: its places stay in Redis); returns A's waiting calls."""
    await a.acquire(credential, "/")
    highs = [asyncio.ensure_future(a.acquire(credential, "/", share=Share("high", "x"))) for _ in range(count)]
    deadline = time.monotonic() + 10
    while (await b.describe(credential))["queued"]["high"] < count * 3 // 4:
        assert time.monotonic() < deadline, "the high calls never queued"
        await asyncio.sleep(0.05)
    assert a._shared is not None
    for queue in a._shared._queues.values():
        await queue.close()
    return highs
