"""Two PATCHes of one consumer at once, each of another field: both take effect, on both stores.

A consumer's settings are one stored object, so a PATCH merges its fields into what it read. Read
before the write transaction, a PATCH that committed in between was overwritten by the older copy.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from gateway.config import StoreConfig
from gateway.domain.models import ConsumerIn, ConsumerPatch
from gateway.store.db import create_engine
from gateway.store.objects import Objects
from gateway.vault.crypto import Keyring
from tests.store.race import before_first

HOOK = {"id": "hook", "kind": "webhook", "url": "https://example.com/hook", "secret": "whsec_" + "A" * 20}


async def test_a_patch_committed_while_another_ran_is_kept(store_url: str, keyring: Keyring) -> None:
    engine, replica = create_engine(StoreConfig(url=store_url)), create_engine(StoreConfig(url=store_url))
    try:
        objects, other = Objects(engine, keyring), Objects(replica, keyring)
        await objects.create_consumer(TypeAdapter[Any](ConsumerIn).validate_python(HOOK))
        ran = before_first(engine, "UPDATE consumers", lambda: other.patch_consumer("hook", ConsumerPatch(timeout=5)))
        await objects.patch_consumer("hook", ConsumerPatch(batch_size=20))
        assert len(ran) == 1
        settings = (await objects.consumer("hook")).settings
        assert (settings["timeout"], settings["batch_size"]) == (5, 20)
    finally:
        await engine.dispose()
        await replica.dispose()
