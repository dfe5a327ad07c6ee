"""``Idempotency-Key``: a repeated mutation gets the stored answer and the upstream is not touched.

Keys live in the store's ``idempotency_keys`` table, so they hold across replicas and restarts, and
are scoped by the token's name (two clients may pick the same key). The first request *claims* a key
by inserting its row with ``status`` NULL: the primary key lets exactly one insert win, on SQLite and
PostgreSQL alike. The winner runs the mutation and stores its answer; a duplicate that arrives while
the winner runs polls the row (short, growing intervals) until the answer is there, so concurrent
duplicates cause one upstream write in total. The same key with another body is a 409; rows older
than 24 h are dead and replaced by the next claim. An unfinished claim lives only ``claim_lease``
seconds (15 min): a replica that died mid-mutation must not block its key for a day, and no mutation
runs that long (each paced call waits at most ``max_wait``).
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
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import Conflict
from gateway.store import tables as t

TTL_SECONDS = 24 * 3600
CLAIM_SECONDS = 15 * 60  # lifetime of an unfinished claim (its owner may have died)
WAIT_SECONDS = 120.0  # longest a duplicate waits for the first request's answer
KEY_PATTERN = r"[\x21-\x7e]{1,160}"  # printable ASCII without spaces, short enough for the key column
_FIRST_POLL, _MAX_POLL = 0.02, 0.5


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
    ) -> None:
        self.engine = engine
        self.ttl = ttl
        self.claim_lease = min(claim_lease, ttl)
        self.wait = wait
        self.clock = clock

    async def claim(self, key: str, fingerprint: str) -> Stored | None:
        """None when this request now owns ``key`` (then ``complete`` or ``release`` it), else the stored answer.

        Raises ``Conflict`` when ``key`` was used with another body, or when the first request is
        still running after ``wait`` seconds.
        """
        deadline = time.monotonic() + self.wait
        delay = _FIRST_POLL
        while True:
            row = await self._insert_or_read(key, fingerprint)
            if row is None:
                return None
            stored_hash, status, response = row
            if stored_hash != fingerprint:
                raise Conflict(
                    "this Idempotency-Key was already used with a different request body", field="Idempotency-Key"
                )
            if status is not None:
                return Stored(status=int(status), body=dict(response or {}))
            if time.monotonic() >= deadline:
                raise Conflict("a request with this Idempotency-Key is still in progress", field="Idempotency-Key")
            await asyncio.sleep(delay)  # the other request's answer is not here yet: poll again later
            delay = min(delay * 2, _MAX_POLL)

    async def _insert_or_read(self, key: str, fingerprint: str) -> tuple[str, int | None, Any] | None:
        """Insert the claim row; None if it was ours to insert, else the live row's fields.

        Reading first keeps pollers out of write transactions (SQLite has one writer at a time); the
        insert runs in a transaction of its own so a lost race is a plain IntegrityError.
        """
        k = t.idempotency_keys.c
        while True:
            now = self.clock()
            async with self.engine.connect() as conn:
                query = select(k.request_hash, k.status, k.response).where(k.key == key, k.expires_at > now)
                row = (await conn.execute(query)).first()
            if row is not None:
                return str(row[0]), row[1], row[2]
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
                        )
                    )
                return None
            except IntegrityError:
                continue  # another request claimed it first: read its row

    async def complete(self, key: str, status: int, body: dict[str, Any]) -> None:
        """Store the answer of the request that claimed ``key``."""
        k = t.idempotency_keys.c
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t.idempotency_keys)
                .where(k.key == key)
                .values(status=status, response=body, expires_at=k.created_at + self.ttl)
            )

    async def release(self, key: str) -> None:
        """Give up an unfinished claim (nothing was written upstream), so a retry may run."""
        k = t.idempotency_keys.c
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.idempotency_keys).where(k.key == key, k.status.is_(None)))
