"""Read-your-writes: wait until named consumers acknowledged given events.

The mutation service calls, on the object in ``app[appkeys.STREAM]``::

    pending = await stream.await_consumers(consumer_ids, seqs, timeout)   # timeout in seconds
    if pending:
        raise ConsumerTimeout("Error: Timed out waiting for consumers: " + ", ".join(pending))

It returns the ids (in the order given) that still have a delivery row for any of ``seqs``; an empty
list means every consumer is done. A consumer whose filter excludes the collection never got
delivery rows, so it counts as done at once. Unknown ids are the caller's 404 to raise beforehand.

Waiting sleeps on the "acked" signal (local acks, and other replicas' acks via PostgreSQL
LISTEN/NOTIFY) and re-checks the store after each wake-up and at least every ``recheck`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.observability.metrics import Metrics
from gateway.store import tables as t
from gateway.stream.signals import Signals

RECHECK_SECONDS = 1.0


class Awaiter:
    def __init__(self, engine: AsyncEngine, signals: Signals, metrics: Metrics, *, recheck: float = RECHECK_SECONDS):
        self.engine = engine
        self.signals = signals
        self.metrics = metrics
        self.recheck = recheck

    async def await_consumers(self, consumer_ids: Sequence[str], seqs: Sequence[int], timeout: float) -> list[str]:  # noqa: ASYNC109 (agreed signature)
        """Block until every consumer acked every seq, at most ``timeout`` s; returns those still pending."""
        started = time.monotonic()
        deadline = started + max(0.0, timeout)
        try:
            while True:
                ticket = self.signals.acked.ticket()
                pending = await self.pending(consumer_ids, seqs)
                remaining = deadline - time.monotonic()
                if not pending or remaining <= 0:
                    return pending
                await self.signals.acked.wait(ticket, min(remaining, self.recheck))
        finally:
            self.metrics.consumer_await.observe(time.monotonic() - started)

    async def pending(self, consumer_ids: Sequence[str], seqs: Sequence[int]) -> list[str]:
        """Which of ``consumer_ids`` still have any of ``seqs`` to acknowledge."""
        if not consumer_ids or not seqs:
            return []
        d = t.deliveries.c
        query = select(d.consumer_id).where(d.consumer_id.in_(list(consumer_ids)), d.seq.in_(list(seqs))).distinct()
        async with self.engine.connect() as conn:
            found = set((await conn.execute(query)).scalars().all())
        return [cid for cid in dict.fromkeys(consumer_ids) if cid in found]
