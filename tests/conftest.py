"""Shared fixtures: real stores (SQLite and PostgreSQL), real Redis, a real gateway app.

PostgreSQL and Redis are the machine's own (127.0.0.1:5432 database ``test``, 127.0.0.1:6379).
Locally a missing service skips the tests that need it; with ``CI=true`` it fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import AppRunner, BaseRunner

from gateway.app import create_app
from gateway.config import Config
from gateway.domain.models import TokenIn
from gateway.http.fastpath import route_proxy_first
from gateway.http.protocol import SERVER_OPTIONS, serve_json_errors
from gateway.store.tables import metadata
from gateway.vault.crypto import Keyring, generate_key

PG_ADMIN_DSN = os.environ.get("GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() == "true"


def service_missing(what: str) -> None:
    """Skip locally, fail in CI: CI must prove the PostgreSQL and Redis paths."""
    if IN_CI:
        pytest.fail(f"{what} is unreachable and CI=true requires it")
    pytest.skip(f"{what} is unreachable")


# --- PostgreSQL ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A database of its own for this test run, migrated once; dropped at the end."""
    name = f"gw_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    if not asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"')):
        yield None
        return
    url = _pg_url(name)
    asyncio.run(_migrate(url))
    yield url
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
async def unmigrated_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A store without any schema yet, on SQLite and on a PostgreSQL database of its own: for migration tests."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    name = f"gw_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    if not await _pg_admin(f'CREATE DATABASE "{name}"'):
        service_missing("PostgreSQL at " + PG_ADMIN_DSN)
    yield _pg_url(name)
    await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _pg_admin(statement: str) -> bool:
    """Run ``statement`` on the admin connection; False when PostgreSQL is unreachable."""
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return False
    try:
        await conn.execute(statement)
    finally:
        await conn.close()
    return True


def _pg_url(database: str) -> str:
    return f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{database}"


async def _migrate(url: str) -> None:
    from gateway.config import StoreConfig
    from gateway.store.db import create_engine, migrate

    engine = create_engine(StoreConfig(url=url))
    await migrate(engine)
    await engine.dispose()


# The sequences owned by the gateway's tables (events.seq), as regclass names.
_OWNED_SEQUENCES = """
SELECT s.oid::regclass::text FROM pg_class s
JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype IN ('a', 'i')
JOIN pg_class t ON t.oid = d.refobjid
WHERE s.relkind = 'S' AND t.relname = ANY($1::text[])
"""


async def truncate_pg(url: str) -> None:
    """Empty the gateway's tables and restart their sequences, as ``TRUNCATE ... RESTART IDENTITY`` would.

    DELETE, children first: on tables a test left nearly empty it takes a few ms, where TRUNCATE (new
    files for every table and index) took 250-400 ms, paid by each of some 300 PostgreSQL tests.
    """
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            for name in tables:
                await conn.execute(f'DELETE FROM "{name}"')
            for (sequence,) in await conn.fetch(_OWNED_SEQUENCES, tables):
                await conn.execute("SELECT setval($1::regclass, 1, false)", sequence)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store migrated once for the run: each test starts from a copy (Alembic's migrations of a
    new file took 0.1-0.3 s, in each of several hundred tests)."""
    path = tmp_path_factory.mktemp("sqlite_template") / "gateway.db"
    asyncio.run(_migrate(f"sqlite:///{path}"))
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, pg_database: str | None, sqlite_template: Path
) -> str:
    """Every test that touches the store runs once on SQLite and once on PostgreSQL, each migrated and empty."""
    if request.param == "sqlite":
        path = tmp_path / "gateway.db"
        with (
            contextlib.closing(sqlite3.connect(sqlite_template)) as source,
            contextlib.closing(sqlite3.connect(path)) as copy,
        ):
            source.backup(copy)  # the WAL-safe copy
        return f"sqlite:///{path}"
    return await _emptied(pg_database)


@pytest.fixture
async def pg_url(pg_database: str | None) -> str:
    """PostgreSQL only (for features that exist only there), emptied before the test."""
    return await _emptied(pg_database)


async def _emptied(pg_database: str | None) -> str:
    if pg_database is None:
        service_missing("PostgreSQL at " + PG_ADMIN_DSN)
    assert pg_database is not None
    await truncate_pg(pg_database)
    return pg_database


# --- Redis -----------------------------------------------------------------------------------------


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    client = aioredis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, aioredis.ConnectionError):
        service_missing("Redis at " + REDIS_URL)
    finally:
        await client.aclose()
    yield REDIS_URL


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so tests sharing the Redis never see each other's state."""
    return f"gwtest-{uuid.uuid4().hex[:10]}"


# --- the gateway -----------------------------------------------------------------------------------


@pytest.fixture
def keyring() -> Keyring:
    return Keyring.parse(generate_key("test"))


def make_config(store_url: str, keyring: Keyring | None = None, **sections: Any) -> Config:
    """A config for tests: the given store, local pacing, plus any section overrides."""
    # Syncs do not read their upstreams unless a test asks (stream={"capture": True}): other tests count calls.
    data: dict[str, Any] = {
        "store": {"url": store_url, "auto_migrate": True},
        "log": {"format": "json"},
        "stream": {"capture": False},
    }
    if keyring is not None:
        data["encryption"] = {"keys": ",".join(f"{kid}:{_b64(raw)}" for kid, raw in keyring.keys)}
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    return Config.model_validate(data)


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


@dataclass
class Gateway:
    """A running gateway app behind a real HTTP test server, with an admin token."""

    client: TestClient[Any, Any]
    admin_token: str

    @property
    def app(self) -> Any:
        return self.client.app

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    async def token(self, name: str, scopes: list[str], only: list[str] | None = None) -> str:
        from gateway.http import appkeys

        spec = TokenIn.model_validate({"name": name, "scopes": scopes, "only": only})
        token: str = await self.app[appkeys.TOKENS].create(spec)
        return token


GatewayFactory = Callable[..., Awaitable[Gateway]]


class ServedLikeProduction(TestServer):
    """A test server that serves as ``gateway serve`` does, so tests see what users get.

    Handlers run on when their client disconnects: aiohttp's test server cancels them
    (``handler_cancellation=True``), the gateway's runner does not, so a mutation is never cut
    halfway by a client that left. Requests the HTTP parser refuses get the JSON error; the header
    timeout and the connection cap are the configured ones, and proxy calls are dispatched before
    the router (``protocol.start_runner``).
    """

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        from gateway.http import appkeys

        kwargs["handler_cancellation"] = False
        kwargs["keepalive_timeout"] = self.app[appkeys.CONFIG].server.header_timeout
        kwargs.update(SERVER_OPTIONS)
        return await super()._make_runner(**kwargs)

    async def start_server(self, *args: Any, **kwargs: Any) -> None:
        from gateway.http import appkeys

        await super().start_server(*args, **kwargs)
        assert self.runner is not None
        serve_json_errors(self.runner, max_connections=self.app[appkeys.CONFIG].server.max_connections)
        if isinstance(self.runner, AppRunner):
            route_proxy_first(self.runner)


@pytest.fixture
def make_gateway(aiohttp_client: Any, keyring: Keyring, store_url: str) -> GatewayFactory:
    """Start a gateway on the parametrized store: ``await make_gateway(pacing={...})``."""

    async def factory(**sections: Any) -> Gateway:
        from gateway.http import appkeys

        config = make_config(store_url, keyring, **sections)
        app = create_app(config, keyring=keyring, ops_on_main=True)
        # The gateway closes a connection idle for server.header_timeout (10 s by default), aiohttp's client
        # keeps one for 15 s: a request sent on a pooled connection as the gateway closes it is reset. The
        # test client lets its idle connections go at half the gateway's timeout instead.
        idle = aiohttp.TCPConnector(keepalive_timeout=config.server.header_timeout / 2)
        client = await aiohttp_client(ServedLikeProduction(app), connector=idle)
        token = await app[appkeys.TOKENS].create(TokenIn(name="admin", scopes=["admin"]))
        return Gateway(client, token)

    return factory
