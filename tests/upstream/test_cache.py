"""The credential cache: served from memory between checks, changes and deletes seen by the next check,
bounded, misses not cached, concurrent reads shared."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import event

from gateway.app import create_app
from gateway.errors import NotFound
from gateway.http import appkeys
from gateway.upstream.cache import MAX_STALENESS, CredentialCache
from gateway.vault.crypto import Keyring
from tests.conftest import Gateway, GatewayFactory, ServedLikeProduction, make_config
from tests.support import FakeClock, poll
from tests.upstream.helpers import Upstream, add_credential, add_sync, start_upstream

SLACK = 5.0  # seconds on top of the documented bound: a loaded 2-core machine delays the checks' loop


def _count_credential_reads(gw: Gateway, reads: list[str]) -> Callable[[], None]:
    """Record every SELECT from the credentials table; returns the function that stops recording."""

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM credentials" in statement:
            reads.append(statement)

    engine = gw.app[appkeys.ENGINE].sync_engine
    event.listen(engine, "before_cursor_execute", count)
    return lambda: event.remove(engine, "before_cursor_execute", count)


async def test_a_checked_cache_serves_from_memory_until_a_check_sees_a_change(make_gateway: GatewayFactory) -> None:
    """Between checks the store is not read; a PATCH is seen by the next check, a DELETE too."""
    gw = await make_gateway()
    await add_sync(gw, await add_credential(gw, "http://127.0.0.1:1/old"))
    await add_credential(gw, "http://127.0.0.1:1/other", cid="cred-2")
    clock = FakeClock(100.0)
    cache = CredentialCache(gw.app[appkeys.OBJECTS], clock=clock)
    await cache.check()
    assert (await cache.for_sync("sync-1")).base_url == "http://127.0.0.1:1/old"
    assert (await cache.credential("cred-2")).base_url == "http://127.0.0.1:1/other"
    reads: list[str] = []
    stop = _count_credential_reads(gw, reads)
    try:
        for _ in range(50):
            await cache.for_sync("sync-1")
            await cache.credential("cred-2")
    finally:
        stop()
    assert reads == []
    patch = {"base_url": "http://127.0.0.1:1/new"}
    assert (await gw.client.patch("/v1/credentials/cred-1", json=patch, headers=gw.auth())).status == 200
    assert (await cache.credential("cred-1")).base_url == "http://127.0.0.1:1/old"  # no check yet
    await cache.check()
    assert (await cache.for_sync("sync-1")).base_url == "http://127.0.0.1:1/new"
    assert (await cache.credential("cred-2")).base_url == "http://127.0.0.1:1/other"
    assert (await gw.client.delete("/v1/credentials/cred-2", headers=gw.auth())).status == 204
    await cache.check()
    with pytest.raises(NotFound):
        await cache.credential("cred-2")


async def test_past_max_staleness_a_call_waits_for_a_fresh_check(make_gateway: GatewayFactory) -> None:
    """Checks stop (loop stalled, store slow): past MAX_STALENESS the next call checks before answering,
    so it sees the change although no background check ran."""
    gw = await make_gateway()
    await add_credential(gw, "http://127.0.0.1:1/old")
    clock = FakeClock(100.0)
    cache = CredentialCache(gw.app[appkeys.OBJECTS], clock=clock)
    await cache.check()
    assert (await cache.credential("cred-1")).base_url == "http://127.0.0.1:1/old"
    patch = {"base_url": "http://127.0.0.1:1/new"}
    assert (await gw.client.patch("/v1/credentials/cred-1", json=patch, headers=gw.auth())).status == 200
    clock.now += MAX_STALENESS - 0.1
    assert (await cache.credential("cred-1")).base_url == "http://127.0.0.1:1/old"
    clock.now += 0.2
    assert (await cache.credential("cred-1")).base_url == "http://127.0.0.1:1/new"


async def test_the_cache_holds_at_most_its_size_dropping_the_least_recently_used(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway()
    for n in range(1, 6):
        await add_credential(gw, "http://127.0.0.1:1", cid=f"cred-{n}")
    cache = CredentialCache(gw.app[appkeys.OBJECTS], size=3, clock=FakeClock())
    await cache.check()
    for n in (1, 2, 3, 1, 4, 5):
        await cache.credential(f"cred-{n}")
    assert len(cache) == 3
    reads: list[str] = []
    stop = _count_credential_reads(gw, reads)
    try:
        for n in (1, 4, 5):  # the three used last are held; 2 and 3 were dropped
            await cache.credential(f"cred-{n}")
        assert reads == []
        await cache.credential("cred-2")
        assert len(reads) == 1
    finally:
        stop()


async def test_unknown_ids_are_not_cached(make_gateway: GatewayFactory) -> None:
    """A credential created right after a miss is found at once."""
    gw = await make_gateway()
    cache = CredentialCache(gw.app[appkeys.OBJECTS], clock=FakeClock())
    with pytest.raises(NotFound):
        await cache.credential("cred-1")
    await add_credential(gw, "http://127.0.0.1:1")
    assert (await cache.credential("cred-1")).id == "cred-1"


async def test_concurrent_misses_share_one_store_read(make_gateway: GatewayFactory) -> None:
    """100 requests missing the same entry at once cause one credentials query, not 100."""
    gw = await make_gateway()
    await add_credential(gw, "http://127.0.0.1:1")
    reads: list[str] = []
    stop = _count_credential_reads(gw, reads)
    try:
        cache = CredentialCache(gw.app[appkeys.OBJECTS], clock=FakeClock())
        found = await asyncio.gather(*(cache.credential("cred-1") for _ in range(100)))
    finally:
        stop()
    assert {c.id for c in found} == {"cred-1"}
    assert len(reads) == 1


async def test_changes_through_one_gateway_reach_another_within_max_staleness(
    make_gateway: GatewayFactory, aiohttp_server: Any, aiohttp_client: Any, keyring: Keyring, store_url: str
) -> None:
    """Two gateways on one store: a PATCH, a sync re-pointed and a DELETE made through the first are
    honoured by the second, which serves from its cache meanwhile, within the documented bound."""
    first = await make_gateway()
    second_app = create_app(make_config(store_url, keyring), keyring=keyring, ops_on_main=True)
    second = Gateway(await aiohttp_client(ServedLikeProduction(second_app)), first.admin_token)
    old, new, other = [await start_upstream(aiohttp_server) for _ in range(3)]
    await add_credential(first, old.url)
    await add_credential(first, other.url, cid="cred-2")
    await add_sync(first, "cred-1")

    async def call(path: str) -> int:
        async with second.client.get(f"/v1/proxy/{path}/echo/x", headers=second.auth()) as resp:
            await resp.read()
            return resp.status

    assert await call("credential/cred-1") == 200 and await call("sync/sync-1") == 200
    assert old.state.requests == 2

    async def honoured(what: str, upstream: Upstream | None, path: str, change: Awaitable[Any]) -> None:
        assert (await change).status in (200, 204)

        async def seen() -> bool:
            status = await call(path)
            return status == 404 if upstream is None else upstream.state.requests > 0

        await poll(what, seen, deadline=MAX_STALENESS + SLACK)

    patch = first.client.patch("/v1/credentials/cred-1", json={"base_url": new.url}, headers=first.auth())
    await honoured("the second gateway calls the new base URL", new, "credential/cred-1", patch)
    repoint = first.client.patch("/v1/syncs/sync-1", json={"credential_id": "cred-2"}, headers=first.auth())
    await honoured("the second gateway follows the re-pointed sync", other, "sync/sync-1", repoint)
    assert (await first.client.delete("/v1/syncs/sync-1", headers=first.auth())).status == 204
    removal = first.client.delete("/v1/credentials/cred-1", headers=first.auth())
    await honoured("the second gateway refuses the deleted credential", None, "credential/cred-1", removal)
