"""Leases: at most one replica does a given job at a time (works a consumer, refreshes a token).

A lease is a ``leases`` row (name, owner, expires_at in epoch seconds). ``acquire`` creates it, renews
it when we already own it, or takes it over once the previous owner let it expire (a crashed replica
stops renewing). Owners renew well before expiry; a replica that cannot renew in time stops working
the job, so two owners overlap for at most one in-flight batch (deliveries are at-least-once anyway).
"""

from __future__ import annotations

import time

from sqlalchemy import delete, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import tables as t


class Leases:
    def __init__(self, engine: AsyncEngine, owner: str, *, ttl: float) -> None:
        self.engine = engine
        self.owner = owner
        self.ttl = ttl

    async def acquire(self, name: str) -> bool:
        """Take, renew or take over ``name``; True when we hold it for the next ``ttl`` seconds."""
        now = time.time()
        expires = now + self.ttl
        lease = t.leases.c
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        async with self.engine.begin() as conn:
            created = await conn.execute(
                dialect.insert(t.leases)
                .values(name=name, owner=self.owner, expires_at=expires)
                .on_conflict_do_nothing(index_elements=["name"])
            )
            if created.rowcount:
                return True
            taken = await conn.execute(
                update(t.leases)
                .where(lease.name == name, or_(lease.owner == self.owner, lease.expires_at < now))
                .values(owner=self.owner, expires_at=expires)
            )
        return bool(taken.rowcount)

    async def release(self, name: str) -> None:
        """Give up ``name`` if we hold it, so the next taker need not wait for the expiry."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.leases).where(t.leases.c.name == name, t.leases.c.owner == self.owner))

    async def release_all(self) -> None:
        """Give up every lease we hold (clean shutdown), so another replica takes over at once."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.leases).where(t.leases.c.owner == self.owner))
