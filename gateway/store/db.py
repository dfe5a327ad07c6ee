"""The store's engine: one async SQLAlchemy engine for SQLite (aiosqlite) or PostgreSQL (asyncpg).

``open_store`` turns the user's URL (``sqlite:///./gateway.db``, ``postgresql://user@host/db``) into
the async driver's URL, applies SQLite's pragmas (WAL, a busy timeout, foreign keys) and checks that
the schema is at Alembic's head, migrating it when configured to.

Read-then-write: on SQLite the driver opens a transaction only at its first write, and PostgreSQL reads
at read committed, so on neither store does a value read earlier in ``engine.begin()`` hold at the
write. Writes are therefore one statement that computes from the row (``generation + 1``, an upsert),
conditional on what was read (compare-and-set on a generation, a lease, a version), or made after
touching the row, which holds it until the commit (``patch_consumer``). ``BEGIN IMMEDIATE`` on SQLite
is not used: SQLAlchemy begins a transaction for reads too, so every read would take the one write
lock, and a task reading on one connection while it writes on another would wait out the busy timeout.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from gateway.config import StoreConfig
from gateway.errors import ConfigError, GatewayError
from gateway.store import onehop
from gateway.store.failures import StoreUnavailable, describe, open_connection

_MIGRATIONS = Path(__file__).parent / "migrations"


class StoreNotMigrated(GatewayError):
    code = "store_not_migrated"


def async_url(url: str) -> str:
    """``sqlite:///x`` -> ``sqlite+aiosqlite:///x``; ``postgresql://`` -> ``postgresql+asyncpg://``."""
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError for garbage
        raise ConfigError(f"store.url: not a database URL: {exc.__class__.__name__}") from None
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}.get(
        parsed.drivername.split("+")[0]
    )
    if driver is None:
        raise ConfigError("store.url: only sqlite:// and postgresql:// URLs are supported")
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


class JsonText(str):
    """A value of a JSON column already encoded (``json.dumps``): stored as is, not encoded again.

    The stream's append path encodes each record's data once and stores that text in every row
    that holds it (``records.data``, inside ``events.record``) instead of encoding it per row.
    """


# A ``\u0000`` escape preceded by an even number of backslashes: a NUL, not the text "\u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _json_serializer(value: Any) -> str:
    """JSON text for a JSON column, every NUL replaced by U+FFFD: PostgreSQL's ``jsonb`` refuses NUL, and an
    upstream record holding one (client bodies are refused for it) failed every later poll of its sync.
    Replaced on SQLite too, so the stream reads the same on both stores."""
    text = value if isinstance(value, JsonText) else json.dumps(value)
    return _NUL_ESCAPE.sub(r"\1\\ufffd", text) if "\\u0000" in text else text


def create_engine(config: StoreConfig) -> AsyncEngine:
    url = async_url(config.url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, json_serializer=_json_serializer)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        onehop.install(engine)
        return engine
    return create_async_engine(
        url,
        pool_size=config.pool_size,
        max_overflow=config.pool_size,
        pool_pre_ping=True,
        json_serializer=_json_serializer,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _alembic_config(connection: Connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: Connection) -> None:
    command.upgrade(_alembic_config(connection), "head")


def _is_current(connection: Connection) -> bool:
    head = ScriptDirectory.from_config(_alembic_config(connection)).get_current_head()
    return MigrationContext.configure(connection).get_current_revision() == head


async def migrate(engine: AsyncEngine) -> None:
    """Create or upgrade the schema to the newest migration; safe to run again."""
    async with open_connection(engine) as conn, conn.begin():
        await conn.run_sync(_upgrade)


_NOT_MIGRATED = "the store's schema is not up to date: run `gateway migrate` (or set store.auto_migrate = true)"


async def ensure_schema(engine: AsyncEngine, config: StoreConfig) -> None:
    """Migrate when configured to, else refuse to run on an outdated schema."""
    if config.migrates_itself:
        await migrate(engine)
        return
    if not await check_schema(engine, config):  # a SQLite file not created yet: no schema at all
        raise StoreNotMigrated(_NOT_MIGRATED)


async def check_schema(engine: AsyncEngine, config: StoreConfig) -> bool:
    """Whether the store is at the newest schema, changing nothing (a SQLite file is not even created);
    raises what ``ensure_schema`` would for a store that ``serve`` cannot use."""
    current = False  # a SQLite file not there yet has no schema
    if not config.is_sqlite or _sqlite_file_exists(engine):
        async with open_connection(engine) as conn:
            current = await conn.run_sync(_is_current)
    if not current and not config.migrates_itself:
        raise StoreNotMigrated(_NOT_MIGRATED)
    return current


def _sqlite_file_exists(engine: AsyncEngine) -> bool:
    """True when the file is there; a missing directory is the error opening it would be."""
    path = Path(engine.url.database or "")
    if path.exists() or str(path) in ("", ":memory:"):
        return True
    if not path.parent.is_dir():
        raise StoreUnavailable(describe(engine.url, FileNotFoundError(f"no directory {str(path.parent)!r}")))
    return False


async def ping(engine: AsyncEngine) -> bool:
    from sqlalchemy import text

    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError):
        return False
    return True


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)
