"""API token lookups: the in-process cache of valid tokens and how revocation reaches it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import StoreConfig
from gateway.store import tables as t
from gateway.store.db import create_engine, migrate, utcnow
from gateway.store.tokens import NEGATIVE_TTL, Tokens, hash_token


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


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
    token = await cli.create("app", ["proxy"])
    assert await replica.authenticate(token) is not None
    await cli.revoke("app")
    clock.now += 4.9
    assert await replica.authenticate(token) is not None
    clock.now += 0.2
    assert await replica.authenticate(token) is None


async def test_ttl_zero_sees_a_revocation_at_once(engine: AsyncEngine) -> None:
    """With ``cache_ttl=0`` every lookup asks the store, so a revocation elsewhere applies immediately."""
    replica, cli = Tokens(engine, cache_ttl=0), Tokens(engine)
    token = await cli.create("app", ["proxy"])
    assert await replica.authenticate(token) is not None
    await cli.revoke("app")
    assert await replica.authenticate(token) is None


async def test_revoking_through_the_same_object_drops_its_cache_entry(engine: AsyncEngine) -> None:
    """A revocation through the caching object itself takes effect without waiting for the TTL."""
    tokens = Tokens(engine, cache_ttl=60, clock=FakeClock())
    token = await tokens.create("app", ["proxy"])
    assert await tokens.authenticate(token) is not None
    await tokens.revoke("app")
    assert await tokens.authenticate(token) is None


async def test_cached_lookup_returns_the_principal(engine: AsyncEngine) -> None:
    """A cached answer carries the same name, scopes and id restriction as the stored token."""
    tokens = Tokens(engine, cache_ttl=5, clock=FakeClock())
    token = await tokens.create("app", ["proxy", "mutations"], only=["sync-1"])
    first = await tokens.authenticate(token)
    again = await tokens.authenticate(token)
    assert again == first
    assert again is not None and again.scopes == {"proxy", "mutations"} and again.only == {"sync-1"}


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
    token = await tokens.create("app", ["proxy"])
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
