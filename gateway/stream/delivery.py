"""The delivery queue every consumer kind reads: claim, ack, nack over ``deliveries`` rows.

A delivery row is one event a consumer still has to acknowledge. Claiming a batch gives each row a
fresh ``ack_id`` and hides it until ``visible_at`` (now + visibility timeout); a row that is not
acked by then is receivable again, so nothing is lost when a receiver dies. The claim is a single
``UPDATE ... WHERE seq IN (SELECT ... LIMIT n) RETURNING``: on PostgreSQL the subquery takes
``FOR UPDATE SKIP LOCKED`` so concurrent receivers on any replica never share a row; on SQLite
(one node) the statement opens the write transaction before it reads, which serializes claimers.
Pull consumers use it through the HTTP views, webhook and postgres workers directly.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import String, cast, delete, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.domain.models import Event
from gateway.observability.metrics import Metrics
from gateway.store import tables as t
from gateway.stream.events import event_from_row
from gateway.stream.signals import Signals

RECHECK_SECONDS = 1.0  # fallback re-check: catches visibility timeouts expiring and missed signals
_NO_SEQ = 2**62


@dataclass(frozen=True)
class Delivery:
    ack_id: str
    event: Event


class DeliveryQueue:
    def __init__(self, engine: AsyncEngine, signals: Signals, metrics: Metrics) -> None:
        self.engine = engine
        self.signals = signals
        self.metrics = metrics
        self._gauged: set[str] = set()  # consumers with a pending series, so deleted ones can be dropped

    async def receive(self, consumer_id: str, *, batch_size: int, visibility: float, wait: float) -> list[Delivery]:
        """Claim up to ``batch_size`` events, waiting up to ``wait`` s for the first to arrive.

        Once shutdown began (``signals.draining``) it answers at once, maybe empty: a long-poll must
        not hold the process's drain for its whole ``wait``.
        """
        deadline = time.monotonic() + wait
        while True:
            ticket = self.signals.appended.ticket()
            batch = await self.claim(consumer_id, batch_size=batch_size, visibility=visibility)
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0 or self.signals.draining:
                return batch
            await self.signals.appended.wait(ticket, min(remaining, RECHECK_SECONDS))

    async def claim(
        self, consumer_id: str, *, batch_size: int, visibility: float, ordered: bool = False
    ) -> list[Delivery]:
        """Claim the lowest visible seqs now; empty when nothing is receivable.

        ``ordered`` (workers) claims only rows below the first one still held by a claim, so after a
        crash or takeover the held batch is redelivered before anything newer: order per record holds.
        """
        d, inner = t.deliveries.c, t.deliveries.alias("receivable").c  # the alias stops auto-correlation
        now = time.time()
        chosen = (
            select(inner.seq)
            .where(inner.consumer_id == consumer_id, inner.visible_at <= now)
            .order_by(inner.seq)
            .limit(batch_size)
        )
        if ordered:
            held = t.deliveries.alias("held").c
            first_held = select(func.min(held.seq)).where(held.consumer_id == consumer_id, held.visible_at > now)
            chosen = chosen.where(inner.seq < func.coalesce(first_held.scalar_subquery(), _NO_SEQ))
        if self.engine.dialect.name == "postgresql":
            chosen = chosen.with_for_update(skip_locked=True)
        # A CTE, because PostgreSQL evaluates a locking CTE exactly once; an IN (subquery) may be
        # re-run per row, and after our own update it would pick further rows past the LIMIT.
        picked = chosen.cte("picked")
        token = uuid.uuid4().hex
        claim = (
            update(t.deliveries)
            .where(d.consumer_id == consumer_id, d.seq.in_(select(picked.c.seq)))
            .values(
                ack_id=literal(token) + literal(".") + cast(d.seq, String),
                visible_at=now + visibility,
                attempts=d.attempts + 1,
            )
            .returning(d.seq, d.ack_id)
        )
        async with self.engine.begin() as conn:
            acks = dict((await conn.execute(claim)).tuples().all())
            if not acks:
                return []
            rows = (await conn.execute(select(t.events).where(t.events.c.seq.in_(list(acks))))).all()
        events = sorted((event_from_row(row) for row in rows), key=lambda e: e.seq)
        return [Delivery(acks[e.seq], e) for e in events]

    async def ack(self, consumer_id: str, ack_ids: Sequence[str]) -> int:
        """Acknowledge claimed rows whose claim still holds; advance the position; wake awaiters."""
        if not ack_ids:
            return 0
        d = t.deliveries.c
        async with self.signals.transaction() as tx:
            conn = tx.conn
            acked = (
                (
                    await conn.execute(
                        delete(t.deliveries)
                        .where(d.consumer_id == consumer_id, d.ack_id.in_(list(ack_ids)), d.visible_at > time.time())
                        .returning(d.seq)
                    )
                )
                .scalars()
                .all()
            )
            if acked:
                await _advance_position(conn, consumer_id, max(acked))
                await tx.announce("ack")
        await self.refresh_pending(consumer_id)
        return len(acked)

    async def nack(self, consumer_id: str, ack_ids: Sequence[str], *, delay: float) -> int:
        """Make claimed rows receivable again after ``delay`` seconds (0: at once)."""
        if not ack_ids:
            return 0
        d = t.deliveries.c
        now = time.time()
        async with self.signals.transaction() as tx:
            result = await tx.conn.execute(
                update(t.deliveries)
                .where(d.consumer_id == consumer_id, d.ack_id.in_(list(ack_ids)), d.visible_at > now)
                .values(ack_id=None, visible_at=now + delay)
            )
            if result.rowcount:
                await tx.announce("append")  # receivers waiting on this consumer may take them now
        return int(result.rowcount or 0)

    async def extend(self, consumer_id: str, ack_ids: Sequence[str], *, visibility: float) -> None:
        """Keep claimed rows hidden for ``visibility`` more seconds (a worker retrying a batch)."""
        d = t.deliveries.c
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t.deliveries)
                .where(d.consumer_id == consumer_id, d.ack_id.in_(list(ack_ids)))
                .values(visible_at=time.time() + visibility)
            )

    async def refresh_all_pending(self, consumer_ids: Sequence[str]) -> None:
        """Set the pending gauge of every consumer in one query (the workers' periodic refresh)."""
        d = t.deliveries.c
        query = select(d.consumer_id, func.count()).group_by(d.consumer_id)
        async with self.engine.connect() as conn:
            counts = dict((await conn.execute(query)).tuples().all())
        for gone in self._gauged - set(consumer_ids):
            self.metrics.consumer_pending.remove(gone)  # a deleted consumer's series must not linger
        self._gauged = set(consumer_ids)
        for consumer_id in consumer_ids:
            self.metrics.consumer_pending.labels(consumer_id).set(counts.get(consumer_id, 0))

    async def refresh_pending(self, consumer_id: str) -> int:
        """Set ``gateway_consumer_pending_events{consumer}`` from the store and return it."""
        query = select(func.count()).select_from(t.deliveries).where(t.deliveries.c.consumer_id == consumer_id)
        async with self.engine.connect() as conn:
            count = int((await conn.execute(query)).scalar_one())
        self.metrics.consumer_pending.labels(consumer_id).set(count)
        self._gauged.add(consumer_id)
        return count


async def _advance_position(conn: AsyncConnection, consumer_id: str, highest_acked: int) -> None:
    """Position = highest seq below which nothing is pending for this consumer; it never goes back."""
    d, c = t.deliveries.c, t.consumers.c
    lowest_pending = (
        await conn.execute(select(func.min(d.seq)).where(d.consumer_id == consumer_id))
    ).scalar_one_or_none()
    position = highest_acked if lowest_pending is None else min(highest_acked, lowest_pending - 1)
    await conn.execute(update(t.consumers).where(c.id == consumer_id, c.position < position).values(position=position))
