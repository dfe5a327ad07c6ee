"""Declarative objects (``[[credentials]]``, ``[[syncs]]``, ``[[consumers]]``): checked, then upserted.

``serve`` checks every reference before it writes anything, and ``check-config`` runs the very same
check, so a config that ``check-config`` passes cannot fail ``serve`` on a declared object (a sync whose
credential exists neither in the file nor in the store used to pass one and stop the other).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.config import Config
from gateway.errors import ConfigError, Conflict, NotFound
from gateway.store.objects import Objects

T = TypeVar("T")


async def check_declared(config: Config, objects: Objects | None) -> None:
    """Every id a declared object names resolves in the config or the store (``None``: an empty store);
    stored credentials being redeclared must decrypt with the configured keys (the upsert reads them)."""
    providers: dict[str, str] = {str(c.id): c.provider for c in config.credentials}
    if objects is not None:
        for credential in config.credentials:
            with contextlib.suppress(Conflict):  # a row this version refuses: the upsert rewrites it whole
                await _stored(objects.credential, str(credential.id))
    for i, sync in enumerate(config.syncs):
        provider = providers.get(sync.credential_id)
        if provider is None and objects is not None:
            stored = await _stored(objects.credential, sync.credential_id)
            provider = stored.provider if stored is not None else None
        if provider is None:
            raise ConfigError(
                f"syncs[{i}].credential_id: credential {sync.credential_id!r} is neither declared in "
                "[[credentials]] nor in the store"
            )
        wrong = [c for c in sync.collections if c.split(":", 1)[0] != provider]
        if wrong:
            raise ConfigError(f"syncs[{i}].collections: {', '.join(wrong)} do not belong to provider {provider!r}")
    await _check_consumers(config, objects)


async def _check_consumers(config: Config, objects: Objects | None) -> None:
    syncs = {str(s.id) for s in config.syncs}
    for i, consumer in enumerate(config.consumers):
        sync_id = consumer.sync_id
        missing = sync_id is not None and sync_id not in syncs
        if missing and (objects is None or await _stored(objects.sync, str(sync_id)) is None):
            raise ConfigError(
                f"consumers[{i}].sync_id: sync {sync_id!r} is neither declared in [[syncs]] nor in the store"
            )
        stored = await _stored(objects.consumer, str(consumer.id)) if objects is not None else None
        if stored is not None and stored.kind != consumer.kind:
            raise ConfigError(
                f"consumers[{i}].kind: consumer {consumer.id!r} exists with kind {stored.kind!r}; kinds never change"
            )


async def _stored(read: Callable[[str], Awaitable[T]], object_id: str) -> T | None:
    try:
        return await read(object_id)
    except NotFound:
        return None


async def declare_objects(config: Config, objects: Objects) -> None:
    """Check, then create or update the config's declared objects, in dependency order.

    Once per start, by one process: an upsert reads then writes, so two processes upserting the same
    new object at once would both try to create it and one would fail.
    """
    await check_declared(config, objects)
    for credential in config.credentials:
        await objects.upsert_credential(credential)
    for sync in config.syncs:
        await objects.upsert_sync(sync)
    for consumer in config.consumers:
        await objects.upsert_consumer(consumer)
