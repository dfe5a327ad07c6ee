"""The Alembic migrations create exactly the tables the code queries, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from gateway.config import StoreConfig
from gateway.store.db import create_engine, migrate
from gateway.store.tables import metadata


def _ours(name: str | None, type_: str, _parent: Any) -> bool:
    """Other tests materialize user tables into the same database; only the gateway's own count."""
    return type_ != "table" or name in metadata.tables


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"include_name": _ours})
    return list(compare_metadata(context, metadata))


async def test_migrations_match_the_tables(store_url: str) -> None:
    """Upgrading to head leaves no difference between the database and tables.py, and re-running is a no-op."""
    engine = create_engine(StoreConfig(url=store_url))
    try:
        await migrate(engine)
        await migrate(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
