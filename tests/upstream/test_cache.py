"""The credential cache: reads served for the TTL, then changes seen; misses not cached; shared concurrent reads."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event

from gateway.errors import NotFound
from gateway.http import appkeys
from gateway.upstream.cache import CredentialCache
from tests.conftest import GatewayFactory
from tests.support import FakeClock
from tests.upstream.helpers import add_credential, add_sync


async def test_changes_are_seen_once_the_ttl_passes(make_gateway: GatewayFactory) -> None:
    """A patched credential is served from the cache until the TTL passes, then re-read."""
    gw = await make_gateway()
    await add_sync(gw, await add_credential(gw, "http://127.0.0.1:1/old"))
    clock = FakeClock(100.0)
    cache = CredentialCache(gw.app[appkeys.OBJECTS], ttl=1.0, clock=clock)
    assert (await cache.for_sync("sync-1")).base_url == "http://127.0.0.1:1/old"
    patch = {"base_url": "http://127.0.0.1:1/new"}
    assert (await gw.client.patch("/v1/credentials/cred-1", json=patch, headers=gw.auth())).status == 200
    assert (await cache.credential("cred-1")).base_url == "http://127.0.0.1:1/old"
    clock.now += 1.5
    assert (await cache.for_sync("sync-1")).base_url == "http://127.0.0.1:1/new"


async def test_unknown_ids_are_not_cached(make_gateway: GatewayFactory) -> None:
    """A credential created right after a miss is found at once."""
    gw = await make_gateway()
    cache = CredentialCache(gw.app[appkeys.OBJECTS], clock=FakeClock())
    with pytest.raises(NotFound):
        await cache.credential("cred-1")
    await add_credential(gw, "http://127.0.0.1:1")
    assert (await cache.credential("cred-1")).id == "cred-1"


async def test_concurrent_misses_share_one_store_read(make_gateway: GatewayFactory) -> None:
    """100 requests missing the same expired entry at once cause one credentials query, not 100."""
    gw = await make_gateway()
    await add_credential(gw, "http://127.0.0.1:1")
    reads: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM credentials" in statement:
            reads.append(statement)

    engine = gw.app[appkeys.ENGINE].sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        cache = CredentialCache(gw.app[appkeys.OBJECTS], clock=FakeClock())
        found = await asyncio.gather(*(cache.credential("cred-1") for _ in range(100)))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert {c.id for c in found} == {"cred-1"}
    assert len(reads) == 1
