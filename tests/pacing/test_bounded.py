"""The pacer's per-credential and per-bucket state is kept only while in use.

Rule locks, ``max_concurrency`` permits and (on Redis) this replica's bucket queues would otherwise
grow with every credential ever called. Each test calls through many distinct keys, checks that what
is left is bounded, and that the structure still does its job afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest

from gateway.config import PacingConfig
from gateway.errors import RateLimited
from gateway.pacing import redis
from gateway.pacing.backend import BackendError, Reservation
from gateway.pacing.limits import BucketLimit
from gateway.pacing.redis import RedisBackend
from gateway.pacing.registry import BucketSpec
from gateway.pacing.scheduler import DEFAULT_SHARE
from tests.pacing.conftest import make_credential

MANY = 5_000
OPEN_RULE = {"match": {"path": "/search/**"}, "rate": 1_000_000, "per": 1, "burst": 1_000_000}
TIGHT_RULE = {"match": {"path": "/search/**"}, "rate": 1, "per": 3600, "burst": 1}


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.mark.slow
async def test_rule_locks_are_kept_only_while_calls_wait_for_their_rule(make_pacer: Any) -> None:
    pacer = await make_pacer()
    for n in range(MANY):
        credential = make_credential(f"c{n}", rate=1_000_000, burst=1_000_000, rules=[OPEN_RULE])
        (await pacer.acquire(credential, "/search/x")).release()
    assert len(pacer._rule_locks) == 0

    tight = make_credential("tight", rate=1_000_000, burst=1_000_000, rules=[TIGHT_RULE])
    first = await pacer.acquire(tight, "/search/x", max_wait=7200)
    second = asyncio.create_task(pacer.acquire(tight, "/search/x", max_wait=7200))
    third = asyncio.create_task(pacer.acquire(tight, "/search/x", max_wait=7200))
    await until(lambda: len(pacer._rule_locks) == 1 and pacer._rule_locks._entries["cred:tight:rule0"].users == 2)
    # the lock still excludes: the third waits behind the second, which waits for the rule's next token
    assert not second.done() and not third.done()
    first.release()
    for task in (second, third):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(pacer._rule_locks) == 0


@pytest.mark.slow
async def test_concurrency_permits_are_forgotten_once_none_is_held_or_awaited(make_pacer: Any) -> None:
    pacer = await make_pacer()
    for n in range(MANY):
        credential = make_credential(f"c{n}", rate=1_000_000, burst=1_000_000, max_concurrency=2)
        permits = [await pacer.acquire(credential, "/x") for _ in range(2)]
        for permit in permits:
            permit.release()
    assert len(pacer._permits_local) == 0

    # They still limit: with one permit, the second call waits for the first to end.
    one = make_credential("one", rate=1_000_000, burst=1_000_000, max_concurrency=1)
    first = await pacer.acquire(one, "/x")
    waiting = asyncio.create_task(pacer.acquire(one, "/x", max_wait=60))
    await asyncio.sleep(0.05)
    assert not waiting.done() and len(pacer._permits_local) == 1
    first.release()
    second = await asyncio.wait_for(waiting, 20)
    assert len(pacer._permits_local) == 1
    second.release()
    assert len(pacer._permits_local) == 0

    # A call refused before it queued leaves nothing behind either.
    slow = make_credential("slow", rate=1, per=3600, burst=1, max_concurrency=1)
    (await pacer.acquire(slow, "/x")).release()
    with pytest.raises(RateLimited):
        await pacer.acquire(slow, "/x", max_wait=0)
    assert len(pacer._permits_local) == 0


def spec(key: str, *, rate: float, burst: int) -> BucketSpec:
    return BucketSpec(key, BucketLimit(rate, 1, burst), key)


async def queue_once(backend: RedisBackend, key: str) -> None:
    """Spend the bucket's burst, queue a call behind it, then leave: a queue made and emptied."""
    bucket = spec(key, rate=1 / 3600, burst=1)
    assert isinstance(await backend.wait_turn((bucket,), DEFAULT_SHARE, 0), Reservation)
    waiting = asyncio.create_task(backend.wait_turn((bucket,), DEFAULT_SHARE, 7200))
    await until(lambda: backend._key(bucket) in backend._queues or waiting.done())
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError, BackendError):  # BackendError: Redis was slow (1 s)
        await waiting


@pytest.mark.slow
async def test_redis_queues_of_this_replica_are_forgotten_once_idle(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep_from = 64  # the production threshold (1,024) needs over 3,000 Redis queues (85 s) to show the same
    monkeypatch.setattr(redis, "SWEEP_FROM", sweep_from)
    backend = RedisBackend(PacingConfig(redis_url=redis_url, key_prefix=redis_prefix))
    batch = sweep_from  # three rounds: without the sweep the third would exceed sweep_from + batch
    try:
        for start in range(0, 3 * sweep_from, batch):
            await asyncio.gather(*(queue_once(backend, f"k{n}") for n in range(start, start + batch)))
            await until(lambda: all(queue.idle for queue in backend._queues.values()))
            assert len(backend._queues) <= sweep_from + batch
        assert len(backend._permit_queues) == 0
        # Queues made after the sweeps still queue and grant in order.
        later = spec("later", rate=20, burst=1)
        granted = await asyncio.gather(*(backend.wait_turn((later,), DEFAULT_SHARE, 30) for _ in range(3)))
        assert all(isinstance(g, Reservation) for g in granted), granted
        slots = [g.deadline for g in granted if isinstance(g, Reservation)]
        assert slots == sorted(slots) and slots[-1] - slots[0] >= 2 / 20 - 0.01
    finally:
        await backend.close()
