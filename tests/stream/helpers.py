"""Helpers for stream tests: seed a credential/sync/consumers and append events directly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter

from gateway.domain.models import ConsumerIn, CredentialIn, Event, SyncIn
from gateway.http import appkeys
from gateway.stream.events import RecordChange, append_changes

CONSUMER = TypeAdapter[Any](ConsumerIn)
CONTACTS = "salesforce:contact"
ACCOUNTS = "salesforce:account"


async def seed_sync(app: Any, sync_id: str = "sync-a") -> None:
    """A Salesforce credential (created once) and a sync over contacts and accounts."""
    objects = app[appkeys.OBJECTS]
    if not await objects.list_credentials():
        await objects.create_credential(
            CredentialIn.model_validate(
                {
                    "id": "cred-sf",
                    "provider": "salesforce",
                    "base_url": "https://example.my.salesforce.com",
                    "auth": {"type": "bearer", "token": "t0ken-value"},
                }
            )
        )
    await objects.create_sync(SyncIn(id=sync_id, credential_id="cred-sf", collections=[CONTACTS, ACCOUNTS]))


async def add_consumer(app: Any, **body: Any) -> str:
    view = await app[appkeys.OBJECTS].create_consumer(CONSUMER.validate_python(body))
    return str(view.id)


async def append(
    app: Any,
    changes: Sequence[RecordChange],
    *,
    sync_id: str = "sync-a",
    collection_id: str = CONTACTS,
) -> list[Event]:
    """Append in a transaction of its own, as syncs and mutations do."""
    consumers = await app[appkeys.OBJECTS].all_consumers()
    async with app[appkeys.STREAM].transaction() as tx:
        return await append_changes(
            tx, sync_id=sync_id, collection_id=collection_id, changes=changes, consumers=consumers
        )


def insert(upstream_id: str, **data: Any) -> RecordChange:
    return RecordChange(upstream_id=upstream_id, action="insert", data={"Id": upstream_id, **data})
