"""API token lookups: the in-process cache of valid tokens and how revocation reaches it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from pydantic import TypeAdapter
from sqlalchemy import Connection, event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

import gateway.store
from gateway.config import StoreConfig
from gateway.domain.models import ConsumerIn, CredentialIn, TokenIn
from gateway.store import tables as t
from gateway.store.db import create_engine, migrate, utcnow
from gateway.store.objects import Objects
from gateway.store.tokens import NEGATIVE_TTL, TOUCH_INTERVAL, Tokens, hash_token
from gateway.vault.crypto import Keyring
from tests.support import FakeClock


@pytest.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(StoreConfig(url=store_url))
    await migrate(engine)
    yield engine
    await engine.dispose()


async def test_revoked_elsewhere_works_until_the_ttl_then_stops(engine: AsyncEngine) -> None:
    """A token revoked by another process stays valid here only until its cache entry's TTL ends."""
    clock = FakeClock()
    replica, cli = Tokens(engine, cache_ttl=5, clock=clock), Tokens(engine)
    token = await cli.create(TokenIn(name="app", scopes=["proxy"]))
    assert await replica.authenticate(token) is not None
    await cli.revoke("app")
    clock.now += 4.9
    assert await replica.authenticate(token) is not None
    clock.now += 0.2
    assert await replica.authenticate(token) is None


async def test_ttl_zero_sees_a_revocation_at_once(engine: AsyncEngine) -> None:
    """With ``cache_ttl=0`` every lookup asks the store, so a revocation elsewhere applies immediately."""
    replica, cli = Tokens(engine, cache_ttl=0), Tokens(engine)
    token = await cli.create(TokenIn(name="app", scopes=["proxy"]))
    assert await replica.authenticate(token) is not None
    await cli.revoke("app")
    assert await replica.authenticate(token) is None


async def test_revoking_through_the_same_object_drops_its_cache_entry(engine: AsyncEngine) -> None:
    """A revocation through the caching object itself takes effect without waiting for the TTL."""
    tokens = Tokens(engine, cache_ttl=60, clock=FakeClock())
    token = await tokens.create(TokenIn(name="app", scopes=["proxy"]))
    assert await tokens.authenticate(token) is not None
    await tokens.revoke("app")
    assert await tokens.authenticate(token) is None


async def test_cached_lookup_returns_the_principal(engine: AsyncEngine) -> None:
    """A cached answer carries the same name, scopes and id restriction as the stored token."""
    tokens = Tokens(engine, cache_ttl=5, clock=FakeClock())
    token = await tokens.create(TokenIn(name="app", scopes=["proxy", "mutations"], only=["sync:sync-1"]))
    first = await tokens.authenticate(token)
    again = await tokens.authenticate(token)
    assert again == first
    assert again is not None and again.scopes == frozenset({"proxy", "mutations"})
    assert again.only == frozenset({"sync:sync-1"})


async def test_unknown_token_is_remembered_only_briefly(engine: AsyncEngine) -> None:
    """A negative answer expires after NEGATIVE_TTL even when the positive TTL is long."""
    clock = FakeClock()
    tokens = Tokens(engine, cache_ttl=60, clock=clock)
    token = "gw_" + "a" * 43
    assert await tokens.authenticate(token) is None
    async with engine.begin() as conn:  # created behind the cache's back, as another replica would
        row = {"name": "late", "token_hash": hash_token(token), "scopes": ["proxy"], "created_at": utcnow()}
        await conn.execute(insert(t.api_tokens).values(**row))
    clock.now += NEGATIVE_TTL + 0.01
    assert await tokens.authenticate(token) is not None


async def test_flood_of_bad_tokens_keeps_the_cache_bounded(engine: AsyncEngine) -> None:
    """Many distinct bad tokens never hold more than ``cache_size`` negative entries."""
    tokens = Tokens(engine, cache_ttl=5, cache_size=50, clock=FakeClock())
    for i in range(200):
        assert await tokens.authenticate(f"gw_bad{i}") is None
    assert len(tokens._unknown) == 50


async def test_concurrent_misses_share_one_store_query(engine: AsyncEngine) -> None:
    """50 requests presenting the same uncached token at once cause one api_tokens query."""
    tokens = Tokens(engine, cache_ttl=5, clock=FakeClock())
    token = await tokens.create(TokenIn(name="app", scopes=["proxy"]))
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM api_tokens" in statement:
            reads.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        found = await asyncio.gather(*(tokens.authenticate(token) for _ in range(50)))
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert all(p is not None and p.name == "app" for p in found)
    assert len(reads) == 1


async def test_a_cached_token_stops_at_its_expiry(engine: AsyncEngine) -> None:
    """Expiry is checked on every call, so a long cache TTL never stretches a token's life."""
    wall = FakeClock()
    wall.now = time.time()
    tokens = Tokens(engine, cache_ttl=3600, clock=FakeClock(), wall_clock=wall)
    expires = datetime.fromtimestamp(wall.now + 10, UTC)
    token = await tokens.create(TokenIn(name="app", scopes=["proxy"], expires_at=expires))
    principal = await tokens.authenticate(token)
    assert principal is not None and principal.expires_at == expires.timestamp()
    wall.now = expires.timestamp() - 0.1
    assert await tokens.authenticate(token) is not None
    wall.now = expires.timestamp()
    assert await tokens.authenticate(token) is None


async def test_last_used_at_is_written_once_per_interval(engine: AsyncEngine) -> None:
    """Every use counts, but the store is written at most once per TOUCH_INTERVAL per token."""
    clock = FakeClock()
    tokens = Tokens(engine, cache_ttl=3600, clock=clock)
    token = await tokens.create(TokenIn(name="app", scopes=["proxy"]))
    assert (await tokens.view("app")).last_used_at is None
    writes: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().startswith("UPDATE api_tokens"):
            writes.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        for _ in range(20):
            assert await tokens.authenticate(token) is not None
        first = (await tokens.view("app")).last_used_at
        clock.now += TOUCH_INTERVAL
        assert await tokens.authenticate(token) is not None
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert first is not None and len(writes) == 2
    later = (await tokens.view("app")).last_used_at
    assert later is not None and later >= first


def _alembic(connection: Connection, verb: str, revision: str) -> None:
    """``alembic upgrade|downgrade <revision>`` on ``connection``, as ``migrate`` runs it to the head."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(gateway.store.__file__).parent / "migrations"))
    cfg.attributes["connection"] = connection
    getattr(command, verb)(cfg, revision)


async def test_tokens_made_before_the_migration_get_the_defaults(tmp_path: Path) -> None:
    """Upgrading a store whose tokens predate priority/weight gives them normal priority, weight 1."""
    engine = create_engine(StoreConfig(url=f"sqlite:///{tmp_path / 'old.db'}"))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "upgrade", "0001")
            await conn.execute(
                text("INSERT INTO api_tokens (name, token_hash, scopes, created_at) VALUES ('old', :h, '[]', :at)"),
                {"h": hash_token("gw_old"), "at": utcnow()},
            )
        await migrate(engine)
        principal = await Tokens(engine).authenticate("gw_old")
        assert principal is not None
        assert (principal.priority, principal.weight, principal.expires_at) == ("normal", 1, None)
    finally:
        await engine.dispose()


async def test_plain_only_ids_become_the_typed_entries_they_could_reach(
    unmigrated_store_url: str, keyring: Keyring
) -> None:
    """0009 gives each stored plain id the kinds that have an object with that id (every kind where none
    has), leaves typed entries and unrestricted tokens alone, and changes nothing when run again."""
    engine = create_engine(StoreConfig(url=unmigrated_store_url))
    old = {
        "cred": ["billing", "sync:x"],  # only a credential is called billing
        "both": ["shared", "credential:shared"],  # a sync and a credential are called shared
        "ghost": ["gone"],  # nothing is called gone (yet)
        "typed": ["consumer:mirror"],
        "all": None,
    }
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "upgrade", "0008_change_counters")
        objects = Objects(engine, keyring)
        for cid in ("billing", "shared"):
            auth = {"type": "bearer", "token": "t"}
            body = {"id": cid, "provider": "stripe", "base_url": "https://api.stripe.com", "auth": auth}
            await objects.create_credential(CredentialIn.model_validate(body))
        await objects.create_consumer(TypeAdapter[Any](ConsumerIn).validate_python({"id": "mirror", "kind": "pull"}))
        async with engine.begin() as conn:  # the columns of 0008: the code's own sync writes need later ones
            sync = {"id": "shared", "credential_id": "shared", "collections": [], "options": {}}
            await conn.execute(insert(t.syncs).values(**sync, created_at=utcnow(), updated_at=utcnow()))
            for i, (name, only) in enumerate(old.items()):
                row = {"name": name, "token_hash": hash_token(f"gw_{i}"), "scopes": ["proxy"], "only_ids": only}
                await conn.execute(insert(t.api_tokens).values(**row, created_at=utcnow()))
        await migrate(engine)
        typed = {
            "cred": ["credential:billing", "sync:x"],
            "both": ["sync:shared", "credential:shared"],
            "ghost": ["sync:gone", "credential:gone", "consumer:gone"],
            "typed": ["consumer:mirror"],
            "all": None,
        }
        assert {v.name: v.only for v in await Tokens(engine).list()} == typed
        async with engine.begin() as conn:  # 0009 once more: already typed lists stay as they are
            await conn.run_sync(_alembic, "downgrade", "0008_change_counters")
        await migrate(engine)
        assert {v.name: v.only for v in await Tokens(engine).list()} == typed
    finally:
        await engine.dispose()
