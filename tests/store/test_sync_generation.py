"""A backfill request and a poller's page commit racing on one sync: the backfill wins, on both stores.

The backfill read the sync's generation and wrote it plus one in a later statement. A poller page
committed in between (its own generation bump) left the sync at the generation the poller now held,
so the poller's next page was accepted and wrote its cursor over the backfill's reset: the request
was lost. Here the poller commits through a second engine (another replica) at exactly that moment.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import StoreConfig
from gateway.domain.models import CredentialIn, SyncIn
from gateway.store.db import create_engine
from gateway.store.objects import Objects
from gateway.store.syncs import advance
from gateway.vault.crypto import Keyring
from tests.store.race import before_first

COLLECTION = "stripe:customer"
READ = {COLLECTION: {"phase": "live", "event": "evt_1"}}  # a poller's cursor after a page


async def _page(engine: AsyncEngine, generation: int) -> int | None:
    """A poller's page commit (cursor and generation, conditional on the generation it read)."""
    async with engine.begin() as conn:
        return await advance(conn, "s", generation, cursor=READ, progress={}, state="live")


async def test_a_backfill_supersedes_a_page_committed_while_it_ran(store_url: str, keyring: Keyring) -> None:
    engine, replica = create_engine(StoreConfig(url=store_url)), create_engine(StoreConfig(url=store_url))
    try:
        objects = Objects(engine, keyring)
        auth = {"type": "basic", "username": "sk_test_x"}
        body = {"id": "c", "provider": "stripe", "base_url": "https://api.stripe.com", "auth": auth}
        await objects.create_credential(CredentialIn.model_validate(body))
        await objects.create_sync(SyncIn(id="s", credential_id="c", collections=[COLLECTION]))
        committed = before_first(engine, "UPDATE syncs", lambda: _page(replica, 0))  # the backfill's write
        await objects.backfill_sync("s")
        assert committed == [1]
        assert await _page(replica, 1) is None  # the poller's next page is refused: it must re-read
        sync = await objects.sync("s")
        assert (sync.cursor, sync.state, sync.generation) == ({}, "backfilling", 2)
    finally:
        await engine.dispose()
        await replica.dispose()
