"""Change counters: one number per object kind, bumped in the transaction of every change to it.

Replicas cache objects (the upstream client's decrypted credentials) and must drop what another
replica changed or deleted. Reading one counter row a second tells them whether anything changed,
with no clock involved: the bump commits with the change, and writers of one kind serialise on
the row, so a counter read after a change's commit is higher than one read before it.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.store import tables as t

Kind = Literal["credentials", "syncs"]


async def bump(conn: AsyncConnection, kind: Kind) -> None:
    """Count one change of ``kind`` inside the caller's transaction (the row is made on first use)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(t.changes).values(kind=kind, generation=1)
    statement = statement.on_conflict_do_update(
        index_elements=["kind"], set_={"generation": t.changes.c.generation + 1}
    )
    await conn.execute(statement)


async def generations(engine: AsyncEngine) -> dict[str, int]:
    """How many changes of each kind were ever committed, in one query (a kind never changed is absent)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(t.changes.c.kind, t.changes.c.generation))).all()
    return {row.kind: int(row.generation) for row in rows}
