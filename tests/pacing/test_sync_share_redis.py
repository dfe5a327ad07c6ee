"""A sync's ``max_share`` counts the credential's whole queue on Redis, not only its own replica's."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.config import Config
from gateway.pacing.pacer import GatewayPacer
from gateway.pacing.scheduler import Share as PacingShare
from gateway.syncs.share import Share, crowded
from tests.pacing.conftest import make_credential

pytestmark = pytest.mark.slow
RATE = 20.0
MAX_SHARE = 0.1  # the sync may take 2 of the 20 calls/s while others wait
SYNC_CALLS = 6


async def test_a_sync_yields_to_calls_queued_on_another_replica(
    make_pacer: Any, redis_url: str, redis_prefix: str
) -> None:
    """Replica B queues another sync's calls; replica A, which has nothing queued itself, sees them and
    spaces its sync's calls to max_share: its 6 calls span at least 5 / (20 * 0.1) = 2.5 s, where the
    fair share of the low class alone would grant them at 10/s (0.5 s)."""
    pacing = {"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix, "on_backend_error": "reject"}
    a: GatewayPacer = await make_pacer(pacing=pacing)
    b: GatewayPacer = await make_pacer(pacing=pacing)
    credential = make_credential(rate=RATE, burst=1, max_wait=600)
    assert not await crowded(a, credential)
    flood = PacingShare("low", "sync:other")
    other = [asyncio.ensure_future(b.acquire(credential, "/", share=flood)) for _ in range(80)]
    try:
        deadline = time.monotonic() + 10
        while not await crowded(a, credential):
            assert time.monotonic() < deadline, "A never saw B's queued calls"
            await asyncio.sleep(0.02)  # poll interval, not a wait for the condition
        share, interval = Share(), Share.interval(Config(), credential, MAX_SHARE)
        granted = []
        for _ in range(SYNC_CALLS):  # as SyncPoller._space, then the call's own turn
            share.wait_if(await crowded(a, credential), interval)
            await share.pending()
            await a.acquire(credential, "/", share=PacingShare("low", "sync:mine"))
            granted.append(time.monotonic())
        assert not all(w.done() for w in other), "B's queue emptied before A's sync finished"
    finally:
        for waiter in other:
            waiter.cancel()
        await asyncio.gather(*other, return_exceptions=True)
    assert granted[-1] - granted[0] >= (SYNC_CALLS - 1) * interval * 0.95, granted
