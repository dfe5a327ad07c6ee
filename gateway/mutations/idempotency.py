"""``Idempotency-Key``: a repeated mutation gets the stored answer and the upstream is not touched.

Keys live in the store's ``idempotency_keys`` table, so they hold across replicas and restarts, and
are scoped by the token's name (two clients may pick the same key). The first request *claims* a key
by inserting its row with ``status`` NULL: the primary key lets exactly one insert win, on SQLite and
PostgreSQL alike. The winner runs the mutation and stores its answer; a duplicate that arrives while
the winner runs polls the row (short, growing intervals) until the answer is there, so concurrent
duplicates cause one upstream write in total. The same key with another body is a 409; rows older
than 24 h are dead and replaced by the next claim.

A claim carries the claiming replica's lease (``gateway.mutations.journal``). Once the mutation wrote
upstream, its journal row holds the claim for 24 h and recovery stores the answer if the replica
dies; a duplicate meanwhile waits for that answer, or gets 409 ``mutation_outcome_unknown`` at once
if recovery found that only change capture can tell what the upstream did. A claim whose replica's
lease lapsed with no journal row wrote nothing upstream: it is dropped and the duplicate runs. Without
a lease (rows from before the journal) an unfinished claim lives ``claim_lease`` seconds (15 min).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import Conflict, MutationOutcomeUnknown
from gateway.store import tables as t

TTL_SECONDS = 24 * 3600
CLAIM_SECONDS = 15 * 60  # lifetime of an unfinished claim (its owner may have died)
WAIT_SECONDS = 120.0  # longest a duplicate waits for the first request's answer
KEY_PATTERN = r"[\x21-\x7e]{1,160}"  # printable ASCII without spaces, short enough for the key column
_FIRST_POLL, _MAX_POLL = 0.02, 0.5
UNKNOWN = "unknown"  # journal state of a mutation whose outcome only change capture can tell
AWAITING_CAPTURE = "awaiting_change_capture"  # its recovery state, as the 409 names it


@dataclass(frozen=True)
class _Claim:
    """A live row of the table: whose it is, and whether the claiming replica is still alive."""

    request_hash: str
    status: int | None
    response: Any
    lease: str | None
    lease_live: bool


@dataclass(frozen=True)
class Stored:
    """An answer given before: replayed as it is."""

    status: int
    body: dict[str, Any]


def request_hash(body: Any) -> str:
    """The body's fingerprint; key order and whitespace do not matter, values do."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyKeys:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        ttl: float = TTL_SECONDS,
        claim_lease: float = CLAIM_SECONDS,
        wait: float = WAIT_SECONDS,
        clock: Callable[[], float] = time.time,
        lease: str | None = None,
    ) -> None:
        self.engine = engine
        self.lease = lease  # this replica's lease name, written into its claims
        self.ttl = ttl
        self.claim_lease = min(claim_lease, ttl)
        self.wait = wait
        self.clock = clock

    async def claim(self, key: str, fingerprint: str) -> Stored | None:
        """None when this request now owns ``key`` (then ``complete`` or ``release`` it), else the stored answer.

        Raises ``Conflict`` when ``key`` was used with another body, or when the first request is
        still running after ``wait`` seconds; ``MutationOutcomeUnknown`` when its outcome awaits
        change capture.
        """
        deadline = time.monotonic() + self.wait
        delay = _FIRST_POLL
        while True:
            row = await self._insert_or_read(key, fingerprint)
            if row is None:
                return None
            if row.request_hash != fingerprint:
                raise Conflict(
                    "this Idempotency-Key was already used with a different request body", field="Idempotency-Key"
                )
            if row.status is not None:
                return Stored(status=int(row.status), body=dict(row.response or {}))
            if await self._settle_unfinished(key, row):
                continue  # a dead claim was dropped: claim the key afresh
            if time.monotonic() >= deadline:
                raise Conflict("a request with this Idempotency-Key is still in progress", field="Idempotency-Key")
            await asyncio.sleep(delay)  # the other request's answer is not here yet: poll again later
            delay = min(delay * 2, _MAX_POLL)

    async def _settle_unfinished(self, key: str, row: _Claim) -> bool:
        """What an unfinished claim means: True if it was dead and is now dropped; raises if unknown."""
        async with self.engine.connect() as conn:
            journal = await _journal_state(conn, key)
        if journal is not None and journal[0] == UNKNOWN:
            raise MutationOutcomeUnknown(
                f"Error: the outcome of the mutation with this Idempotency-Key is unknown: {journal[2]} "
                f"Recovery state: {AWAITING_CAPTURE}. Do not send it again under a new key before checking "
                "the upstream or the stream.",
                field="Idempotency-Key",
                recovery=AWAITING_CAPTURE,
                mutation_id=journal[1],
            )
        if journal is not None or row.lease is None or row.lease_live:
            return False  # running, or being recovered: its answer will come
        k = t.idempotency_keys.c
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.idempotency_keys).where(k.key == key, k.status.is_(None), k.lease == row.lease))
        return True

    async def _insert_or_read(self, key: str, fingerprint: str) -> _Claim | None:
        """Insert the claim row; None if it was ours to insert, else the live row's fields.

        Reading first keeps pollers out of write transactions (SQLite has one writer at a time); the
        insert runs in a transaction of its own so a lost race is a plain IntegrityError.
        """
        k, lease = t.idempotency_keys.c, t.leases.c
        while True:
            now = self.clock()
            async with self.engine.connect() as conn:
                query = (
                    select(k.request_hash, k.status, k.response, k.lease, lease.expires_at)
                    .select_from(t.idempotency_keys.outerjoin(t.leases, lease.name == k.lease))
                    .where(k.key == key, k.expires_at > now)
                )
                row = (await conn.execute(query)).first()
            if row is not None:
                live = row[4] is not None and float(row[4]) >= time.time()
                return _Claim(str(row[0]), row[1], row[2], row[3], live)
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(delete(t.idempotency_keys).where(k.key == key, k.expires_at <= now))
                    await conn.execute(
                        insert(t.idempotency_keys).values(
                            key=key,
                            request_hash=fingerprint,
                            status=None,
                            response=None,
                            created_at=now,
                            expires_at=now + self.claim_lease,
                            lease=self.lease,
                        )
                    )
                return None
            except IntegrityError:
                continue  # another request claimed it first: read its row

    async def complete(self, key: str, status: int, body: dict[str, Any]) -> None:
        """Store the answer of the request that claimed ``key``."""
        async with self.engine.begin() as conn:
            await store_answer(conn, key, status, body, ttl=self.ttl)

    async def release(self, key: str) -> None:
        """Give up an unfinished claim (nothing was written upstream), so a retry may run."""
        k = t.idempotency_keys.c
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.idempotency_keys).where(k.key == key, k.status.is_(None)))


async def store_answer(
    conn: AsyncConnection, key: str, status: int, body: dict[str, Any], *, ttl: float = TTL_SECONDS
) -> None:
    """Store a key's answer in the caller's transaction (the journal's completion shares it)."""
    k = t.idempotency_keys.c
    await conn.execute(
        update(t.idempotency_keys)
        .where(k.key == key)
        .values(status=status, response=body, expires_at=k.created_at + ttl)
    )


async def _journal_state(conn: AsyncConnection, key: str) -> tuple[str, str, str | None] | None:
    """(state, mutation id, detail) of the journal row the key's mutation left, if any."""
    j = t.mutation_journal.c
    row = (await conn.execute(select(j.state, j.id, j.detail).where(j.idempotency_key == key))).first()
    return None if row is None else (str(row[0]), str(row[1]), row[2])
