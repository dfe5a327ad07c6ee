"""Two PATCHes of one sync at once: the second is checked against what the first committed, on both stores.

A sync's credential, collections and options are checked together (the collections must be the
credential's provider's, its options those the provider reads). Checked against a copy read before the
write transaction, a PATCH committed in between (another replica's) was not seen: each PATCH passed
against the sync as it was before, and together they stored a pair that neither check allowed.
"""

from __future__ import annotations

import pytest

from gateway.config import StoreConfig
from gateway.domain.models import CredentialIn, SyncIn, SyncPatch
from gateway.errors import InvalidRequest
from gateway.store.db import create_engine
from gateway.store.objects import Objects
from gateway.vault.crypto import Keyring
from tests.store.race import before_first


async def test_a_patch_is_checked_against_one_committed_while_it_ran(store_url: str, keyring: Keyring) -> None:
    """While a collections PATCH (of the Stripe credential's) runs, another replica re-points the sync to a
    HubSpot credential with HubSpot's collections: the Stripe collections are refused, nothing mixed."""
    engine, replica = create_engine(StoreConfig(url=store_url)), create_engine(StoreConfig(url=store_url))
    try:
        objects, other = Objects(engine, keyring), Objects(replica, keyring)
        for cid, provider, base in (
            ("c", "stripe", "https://api.stripe.com"),
            ("h", "hubspot", "https://api.hubapi.com"),
        ):
            body = {"id": cid, "provider": provider, "base_url": base, "auth": {"type": "bearer", "token": "t"}}
            await objects.create_credential(CredentialIn.model_validate(body))
        await objects.create_sync(SyncIn(id="s", credential_id="c", collections=["stripe:customer"]))
        hubspot = SyncPatch(credential_id="h", collections=["hubspot:contact"])
        ran = before_first(engine, "UPDATE syncs", lambda: other.patch_sync("s", hubspot))
        with pytest.raises(InvalidRequest) as refused:
            await objects.patch_sync("s", SyncPatch(collections=["stripe:invoice"]))
        assert len(ran) == 1
        assert refused.value.extra["fields"] == ["collections"]
        sync = await objects.sync("s")
        assert (sync.credential_id, sync.collections) == ("h", ("hubspot:contact",))
    finally:
        await engine.dispose()
        await replica.dispose()
