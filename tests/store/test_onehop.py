"""SQLite statements take one trip to aiosqlite's thread and behave as SQLAlchemy's own path does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.config import StoreConfig
from gateway.store import onehop
from gateway.store.db import create_engine

_metadata = MetaData()
_items = Table("items", _metadata, Column("id", Integer, primary_key=True), Column("name", String, unique=True))


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(StoreConfig(url=f"sqlite:///{tmp_path / 'hops.db'}"))
    async with engine.begin() as conn:
        await conn.run_sync(_metadata.create_all)
    yield engine
    await engine.dispose()


async def _hops(conn: AsyncConnection) -> list[Any]:
    """Count the calls queued to this connection's aiosqlite thread from now on."""
    raw = await conn.get_raw_connection()
    aio: Any = raw.driver_connection
    calls: list[Any] = []
    queue_call = aio._execute

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await queue_call(fn, *args, **kwargs)

    aio._execute = counted
    return calls


async def test_a_statement_is_one_hop(engine: AsyncEngine) -> None:
    assert onehop.available()
    async with engine.begin() as conn:
        calls = await _hops(conn)
        await conn.execute(insert(_items), [{"name": "a"}, {"name": "b"}, {"name": "c"}])  # executemany
        assert len(calls) == 1
        rows = (await conn.execute(select(_items.c.name).where(_items.c.id > 1).order_by(_items.c.id))).all()
        assert [r.name for r in rows] == ["b", "c"] and len(calls) == 2
        await conn.execute(text("SELECT 1"))  # no parameters
        assert len(calls) == 3


async def test_results_are_what_sqlalchemy_reports(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        created = await conn.execute(insert(_items).values(name="x"))
        assert created.inserted_primary_key == (1,)  # lastrowid
        many = await conn.execute(insert(_items), [{"name": "y"}, {"name": "z"}])
        assert many.rowcount == 2
        changed = await conn.execute(update(_items).where(_items.c.id >= 2).values(name=_items.c.name + "!"))
        assert changed.rowcount == 2
        returned = await conn.execute(insert(_items).values(name="w").returning(_items.c.id))
        assert returned.scalar_one() == 4
        streamed = await conn.stream(select(_items.c.name).order_by(_items.c.id))  # a server-side cursor
        assert [name async for name in streamed.scalars()] == ["x", "y!", "z!", "w"]


async def test_errors_are_sqlalchemys(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(insert(_items).values(name="dup"))
        with pytest.raises(IntegrityError):
            await conn.execute(insert(_items).values(name="dup"))
        await conn.rollback()
        with pytest.raises(OperationalError):
            await conn.execute(text("SELECT * FROM no_such_table"))
