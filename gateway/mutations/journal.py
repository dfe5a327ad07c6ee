"""The mutation journal: a mutation's write-ahead intent, so a crash never loses an applied change.

Before the first upstream write of a mutation, ``open`` commits a ``mutation_journal`` row: what is
to be written (kind, records, the seed Stripe's per-record keys derive from), the Idempotency-Key and
the lease of the replica running it. Each chunk's stream events and the row's ``progress`` commit in
one transaction (``advance``); the answer and the row's removal in another (``finish``). So at any
instant either the row is gone (the stream and the key's answer are complete) or it says exactly
which chunk may be applied upstream but missing from the stream: ``items[progress:progress+chunk]``.

A row whose replica's lease lapsed (it died), or that its replica handed over (``hand_over``, after a
failure that is not the gateway's own), is recovered by ``gateway.mutations.recovery``. A create on a
provider without upstream idempotency cannot be settled by asking the upstream; recovery marks it
``unknown`` and the sync's change capture settles it (``gateway.mutations.settling``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.domain.models import Record
from gateway.errors import MutationInterrupted
from gateway.mutations.idempotency import AWAITING_CAPTURE, TTL_SECONDS, UNKNOWN, store_answer
from gateway.providers.base import Item
from gateway.store import tables as t

RUNNING = "running"
__all__ = ["AWAITING_CAPTURE", "RUNNING", "UNKNOWN", "Entry", "Journal", "resolve_unknown", "unknown_creates"]


@dataclass(frozen=True)
class Entry:
    """One journal row as recovery and the sync hook see it."""

    id: str
    sync_id: str
    collection_id: str
    kind: str
    items: list[Item]
    seed: str
    key: str | None
    lease: str | None
    state: str
    progress: int
    applied: list[str]
    created_at: float
    written: list[str] | None = None  # the upstream's answer for the chunk at progress, when it was noted
    updated_at: float = 0.0  # for an ``unknown`` row: when recovery marked it so

    @classmethod
    def of(cls, row: Row[Any]) -> Entry:
        items = [Item(i, upstream_id, dict(data)) for i, (upstream_id, data) in enumerate(row._mapping["items"])]
        return cls(
            row.id, row.sync_id, row.collection_id, row.kind, items, row.seed, row.idempotency_key,
            row.lease, row.state, int(row.progress), list(row.applied), float(row.created_at),
            None if row.written is None else list(row.written), float(row.updated_at),
        )  # fmt: skip


class Journal:
    """One replica's handle: the lease its rows carry, and the mutations it is running right now."""

    def __init__(self, engine: AsyncEngine, lease: str, *, grace: float = 0.0) -> None:
        self.engine = engine
        self.lease = lease
        self.grace = grace  # how long an upstream may still be applying a write that timed out
        self.live: set[str] = set()  # rows this process runs; recovery leaves them alone
        self.held: dict[str, float] = {}  # handed-over rows recovery leaves alone until then (monotonic)
        self.wake = asyncio.Event()  # set when a row is handed over: recover it now, not at the next tick

    async def open(
        self, *, sync_id: str, collection_id: str, kind: str, items: Sequence[Item], seed: str, key: str | None
    ) -> str:
        """Commit the intent before anything is sent; the key's claim then lives as long as the row."""
        mutation_id = "mut_" + uuid.uuid4().hex
        self.live.add(mutation_id)
        now = time.time()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(t.mutation_journal).values(
                    id=mutation_id, sync_id=sync_id, collection_id=collection_id, kind=kind,
                    items=[[item.upstream_id, dict(item.data)] for item in items], seed=seed,
                    idempotency_key=key, lease=self.lease, state=RUNNING, progress=0, applied=[],
                    detail=None, created_at=now, updated_at=now,
                )
            )  # fmt: skip
            if key is not None:  # an unfinished claim must not lapse while its outcome is unsettled
                k = t.idempotency_keys.c
                await conn.execute(
                    update(t.idempotency_keys).where(k.key == key).values(expires_at=k.created_at + TTL_SECONDS)
                )
        return mutation_id

    async def advance(self, conn: AsyncConnection, mutation_id: str, progress: int, applied: Sequence[str]) -> None:
        """In the transaction that appends a chunk's events: that chunk is settled."""
        j = t.mutation_journal.c
        await conn.execute(
            update(t.mutation_journal)
            .where(j.id == mutation_id)
            .values(progress=progress, applied=list(applied), written=None, updated_at=time.time())
        )

    async def finish(self, mutation_id: str, key: str | None, status: int, body: Mapping[str, Any]) -> None:
        """The answer stored under the key and the row removed, in one transaction."""
        try:
            async with self.engine.begin() as conn:
                await self.finish_in(conn, mutation_id, key, status, body)
        except BaseException:  # the store failed: recovery (on this replica first) finishes it
            self.hand_over(mutation_id)
            raise
        self.live.discard(mutation_id)

    async def finish_in(
        self, conn: AsyncConnection, mutation_id: str, key: str | None, status: int, body: Mapping[str, Any]
    ) -> None:
        await conn.execute(delete(t.mutation_journal).where(t.mutation_journal.c.id == mutation_id))
        if key is not None:
            await store_answer(conn, key, status, dict(body))

    async def abandon(self, mutation_id: str) -> None:
        """Nothing reached the upstream (a pacing refusal, a 429): forget the intent."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(delete(t.mutation_journal).where(t.mutation_journal.c.id == mutation_id))
        except BaseException:
            self.hand_over(mutation_id)
            raise
        self.live.discard(mutation_id)

    async def note_written(self, mutation_id: str, ids: Sequence[str]) -> None:
        """Best effort, when a run fails after the upstream answered: the ids it confirmed, so recovery
        appends them instead of guessing (a create then needs no change capture)."""
        j = t.mutation_journal.c
        with contextlib.suppress(SQLAlchemyError, OSError):
            async with self.engine.begin() as conn:
                await conn.execute(update(t.mutation_journal).where(j.id == mutation_id).values(written=list(ids)))

    def hand_over(self, mutation_id: str, *, late_writes: bool = False) -> None:
        """This process stops running the mutation; if its row is left, recovery (here first) takes it.

        ``late_writes``: a write timed out and the upstream may still apply it, so recovery waits
        ``grace`` seconds (as long as for a dead replica) before it reads back what happened.
        """
        if late_writes:
            self.held[mutation_id] = time.monotonic() + self.grace
        self.live.discard(mutation_id)
        self.wake.set()

    async def orphans(self) -> list[Entry]:
        """Running rows nobody runs: their replica's lease lapsed, or this replica handed them over."""
        j, lease = t.mutation_journal.c, t.leases.c
        lapsed = or_(lease.name.is_(None), lease.expires_at < time.time())
        ours_idle = and_(j.lease == self.lease, j.id.not_in(sorted(self.live)))
        query = (
            select(t.mutation_journal)
            .select_from(t.mutation_journal.outerjoin(t.leases, lease.name == j.lease))
            .where(j.state == RUNNING, or_(lapsed, ours_idle))
            .order_by(j.created_at)
        )
        async with self.engine.connect() as conn:
            entries = [Entry.of(row) for row in (await conn.execute(query)).all()]
        now = time.monotonic()
        self.held = {i: until for i, until in self.held.items() if until > now}
        return [e for e in entries if e.id not in self.held]

    async def adopt(self, entry: Entry) -> bool:
        """Take ``entry`` over (compare-and-set on its lease): one replica recovers each row."""
        j = t.mutation_journal.c
        cas = j.lease.is_(None) if entry.lease is None else j.lease == entry.lease
        async with self.engine.begin() as conn:
            taken = await conn.execute(
                update(t.mutation_journal)
                .where(j.id == entry.id, j.state == RUNNING, cas)
                .values(lease=self.lease, updated_at=time.time())
            )
        return bool(taken.rowcount)

    async def mark(self, mutation_id: str, *, state: str, detail: str) -> None:
        """Record why recovery stopped (``unknown``) or failed for now (``running``, retried later)."""
        j = t.mutation_journal.c
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t.mutation_journal)
                .where(j.id == mutation_id)
                .values(state=state, detail=detail[:2000], updated_at=time.time())
            )


# --- the hook change capture calls (the syncs' poller) ------------------------------------------------


_J = t.mutation_journal.c
_UNKNOWN_CREATES = (  # built once: every page of a sync that appended something runs it
    select(t.mutation_journal)
    .where(_J.state == UNKNOWN, _J.sync_id == bindparam("sync_id"), _J.collection_id == bindparam("collection_id"))
    .order_by(_J.created_at)
)


async def unknown_creates(conn: AsyncConnection, sync_id: str, collection_id: str) -> list[Entry]:
    """Creates whose outcome only change capture can tell (``gateway.mutations.settling``), oldest first."""
    rows = (await conn.execute(_UNKNOWN_CREATES, {"sync_id": sync_id, "collection_id": collection_id})).all()
    return [Entry.of(row) for row in rows]


async def resolve_unknown(conn: AsyncConnection, entry: Entry, created: Sequence[Record]) -> None:
    """Settle an unknown create in change capture's transaction: ``created`` are the records it found
    for the entry's items (already appended to the stream by the capture itself). The key then answers
    200 when every item was found, else ``mutation_interrupted`` listing the found ones."""
    found = [record.model_dump(mode="json") for record in created]
    if len(found) == len(entry.items):
        status, body = 200, {"records": found}
    else:
        error = MutationInterrupted(
            f"Error: the mutation was interrupted; change capture found {len(found)} of its "
            f"{len(entry.items)} records created upstream",
            records=found,
            recovery="resolved",
            mutation_id=entry.id,
        )
        status, body = error.status, error.body()
    await conn.execute(delete(t.mutation_journal).where(t.mutation_journal.c.id == entry.id))
    if entry.key is not None:
        await store_answer(conn, entry.key, status, body)
