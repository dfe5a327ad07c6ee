"""Live replicas: every serving process says every few seconds which encryption keys it holds.

``gateway keys rotate`` re-encrypts the store under the newest key only once every live replica
holds it; otherwise a replica still on the old key list would meet ciphertext it cannot open. A
replica that stops beating (a crash) drops out of ``live`` after ``LIVE_WITHIN`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import tables as t

log = structlog.get_logger(__name__)
BEAT_INTERVAL = 5.0
LIVE_WITHIN = 3 * BEAT_INTERVAL


@dataclass(frozen=True)
class Replica:
    id: str
    key_ids: list[str]
    seen_at: float


class Replicas:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def beat(self, replica_id: str, key_ids: list[str], *, started_at: float) -> None:
        """Record that ``replica_id`` is alive now and holds ``key_ids``."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        now = time.time()
        values = {"id": replica_id, "key_ids": key_ids, "started_at": started_at, "seen_at": now}
        statement = dialect.insert(t.replicas).values(**values)
        statement = statement.on_conflict_do_update(index_elements=["id"], set_={"key_ids": key_ids, "seen_at": now})
        async with self.engine.begin() as conn:
            await conn.execute(statement)

    async def leave(self, replica_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.replicas).where(t.replicas.c.id == replica_id))

    async def live(self, *, within: float = LIVE_WITHIN) -> list[Replica]:
        """Replicas seen in the last ``within`` seconds (older rows are crashed processes: pruned)."""
        cutoff = time.time() - within
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.replicas).where(t.replicas.c.seen_at < cutoff - 24 * 3600))
            rows = (await conn.execute(select(t.replicas).where(t.replicas.c.seen_at >= cutoff))).all()
        return [Replica(row.id, list(row.key_ids), row.seen_at) for row in rows]


@contextlib.asynccontextmanager
async def beating(replicas: Replicas, replica_id: str, key_ids: Callable[[], list[str]]) -> AsyncIterator[None]:
    """Beat every ``BEAT_INTERVAL`` s while inside, leave on the way out (a clean shutdown).

    ``key_ids`` is read at every beat, so a reload's new keys show within one interval.
    """
    started = time.time()

    async def beat_forever() -> None:
        while True:
            try:
                await replicas.beat(replica_id, key_ids(), started_at=started)
            except (OSError, SQLAlchemyError) as exc:  # the store is away: readiness says so already
                log.warning("replica_heartbeat_failed", error=type(exc).__name__)
            await asyncio.sleep(BEAT_INTERVAL)

    task = asyncio.create_task(beat_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.suppress(OSError, SQLAlchemyError):
        await replicas.leave(replica_id)


def new_replica_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"
