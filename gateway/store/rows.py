"""Shared row access for the object tables: lookups that 404, updates that stamp, unique inserts."""

from __future__ import annotations

import secrets
import string
from typing import Any, Protocol

from sqlalchemy import Table, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import Conflict, NotFound
from gateway.store import changes
from gateway.store.db import utcnow

_ALPHABET = string.ascii_letters + string.digits


def new_id(kind: str) -> str:
    """``credential-<12 random base62>``, as SPEC.md shapes generated ids."""
    return f"{kind}-" + "".join(secrets.choice(_ALPHABET) for _ in range(12))


class Sealer(Protocol):
    """What the store needs of the vault's ``Keyring``: it seals secrets but never sees a key."""

    def seal(self, plaintext: str) -> str: ...

    def open(self, sealed: str) -> str: ...

    def reseal(self, sealed: str) -> str: ...

    def key_id_of(self, sealed: str) -> str: ...


class Rows:
    """Engine, sealer and the row helpers every object kind shares."""

    def __init__(self, engine: AsyncEngine, keyring: Sealer) -> None:
        self.engine = engine
        self.keyring = keyring

    async def _row(self, table: Table, object_id: str, kind: str) -> Row[Any]:
        async with self.engine.connect() as conn:
            return await self._row_in(conn, table, object_id, kind)

    @staticmethod
    async def _row_in(conn: AsyncConnection, table: Table, object_id: str, kind: str) -> Row[Any]:
        row: Row[Any] | None = (await conn.execute(select(table).where(table.c.id == object_id))).first()
        if row is None:
            raise NotFound(f"{kind} {object_id!r} not found")
        return row

    async def _update(
        self, table: Table, object_id: str, kind: str, values: dict[str, Any], *, counted: changes.Kind | None = None
    ) -> None:
        """Update one row and stamp it; ``counted``: bump that change counter in the same transaction."""
        async with self.engine.begin() as conn:
            await update_one(conn, table, object_id, kind, values)
            if counted is not None:
                await changes.bump(conn, counted)


async def update_one(conn: AsyncConnection, table: Table, object_id: str, kind: str, values: dict[str, Any]) -> None:
    """Update one row in the caller's transaction and stamp it; 404 when there is none."""
    result = await conn.execute(update(table).where(table.c.id == object_id).values(**values, updated_at=utcnow()))
    if not result.rowcount:
        raise NotFound(f"{kind} {object_id!r} not found")


async def insert_unique(conn: AsyncConnection, table: Table, values: dict[str, Any], kind: str) -> None:
    try:  # no savepoint: on SQLite one commits at once, leaving the rest of the caller's transaction no atomicity
        await conn.execute(insert(table).values(**values))
    except IntegrityError:
        raise Conflict(f"{kind} {values['id']!r} already exists", field="id") from None
