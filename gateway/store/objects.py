"""Credentials, syncs and consumers: the objects users manage, with their secrets sealed.

``Objects`` is the only code that reads or writes those tables. Secrets go in and out through the
``Keyring``: the whole ``auth`` object of a credential and the secret settings of a consumer (webhook
secret, postgres DSN) are one ciphertext each. Reads for the Management API return masked views;
``credential()``/``consumer()`` return decrypted domain objects for the proxy and the workers.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.models import (
    Auth,
    ConsumerIn,
    ConsumerPatch,
    ConsumerView,
    CredentialIn,
    CredentialPatch,
    CredentialView,
    Provider,
    RateLimitOverride,
    SyncIn,
    SyncPatch,
    SyncView,
    TimeoutsOverride,
    mask_dsn,
    masked_auth,
    reveal,
)
from gateway.store import tables as t
from gateway.store.db import as_utc, utcnow
from gateway.vault.crypto import Keyring

_AUTH = TypeAdapter[Any](Auth)
_CONSUMER = TypeAdapter[Any](ConsumerIn)
_ALPHABET = string.ascii_letters + string.digits
_SECRET_SETTINGS = ("secret", "dsn")


def new_id(kind: str) -> str:
    """``credential-<12 random base62>``, as SPEC.md shapes generated ids."""
    return f"{kind}-" + "".join(secrets.choice(_ALPHABET) for _ in range(12))


@dataclass(frozen=True)
class Credential:
    """A credential with its auth decrypted: handed to the upstream client, never serialized."""

    id: str
    provider: Provider
    base_url: str
    auth: Auth
    rate_limit: RateLimitOverride | None
    timeouts: TimeoutsOverride | None
    ca_bundle: str | None
    version: int

    def __repr__(self) -> str:
        return f"Credential(id={self.id!r}, provider={self.provider!r}, auth_type={self.auth.type!r})"


@dataclass(frozen=True)
class Sync:
    id: str
    credential_id: str
    collections: tuple[str, ...]
    options: dict[str, str]


@dataclass(frozen=True)
class Consumer:
    """A consumer with its secret settings (webhook secret, DSN) decrypted into ``settings``."""

    id: str
    kind: str
    sync_id: str | None
    collections: tuple[str, ...] | None
    settings: dict[str, Any]
    position: int
    status: str

    def __repr__(self) -> str:
        return f"Consumer(id={self.id!r}, kind={self.kind!r})"

    def wants(self, sync_id: str, collection_id: str) -> bool:
        """Whether this consumer's filter lets events of that sync and collection through."""
        if self.sync_id is not None and self.sync_id != sync_id:
            return False
        return self.collections is None or collection_id in self.collections


class Objects:
    def __init__(self, engine: AsyncEngine, keyring: Keyring) -> None:
        self.engine = engine
        self.keyring = keyring

    # --- credentials ------------------------------------------------------------------------------

    async def create_credential(self, body: CredentialIn) -> CredentialView:
        now = utcnow()
        values = {
            "id": body.id or new_id("credential"),
            "provider": body.provider,
            "base_url": body.base_url,
            "auth_type": body.auth.type,
            "auth_secret": self.keyring.seal(json.dumps(reveal(body.auth))),
            "rate_limit": _dump(body.rate_limit),
            "timeouts": _dump(body.timeouts),
            "ca_bundle": body.ca_bundle,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        async with self.engine.begin() as conn:
            await _insert_unique(conn, t.credentials, values, "credential")
        return await self.credential_view(str(values["id"]))

    async def credential_view(self, credential_id: str) -> CredentialView:
        return self._credential_view(await self._row(t.credentials, credential_id, "credential"))

    async def list_credentials(self) -> list[CredentialView]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.credentials).order_by(t.credentials.c.id))).all()
        return [self._credential_view(row) for row in rows]

    async def credential(self, credential_id: str) -> Credential:
        row = await self._row(t.credentials, credential_id, "credential")
        return Credential(
            id=row.id,
            provider=row.provider,
            base_url=row.base_url,
            auth=_AUTH.validate_python(json.loads(self.keyring.open(row.auth_secret))),
            rate_limit=RateLimitOverride.model_validate(row.rate_limit) if row.rate_limit else None,
            timeouts=TimeoutsOverride.model_validate(row.timeouts) if row.timeouts else None,
            ca_bundle=row.ca_bundle,
            version=row.version,
        )

    async def patch_credential(self, credential_id: str, patch: CredentialPatch) -> CredentialView:
        changes: dict[str, Any] = {}
        fields = patch.model_fields_set
        if "base_url" in fields and patch.base_url is not None:
            changes["base_url"] = patch.base_url
        if "auth" in fields and patch.auth is not None:
            changes["auth_type"] = patch.auth.type
            changes["auth_secret"] = self.keyring.seal(json.dumps(reveal(patch.auth)))
            changes["version"] = t.credentials.c.version + 1
        for name in ("rate_limit", "timeouts"):
            if name in fields:
                changes[name] = _dump(getattr(patch, name))
        if "ca_bundle" in fields:
            changes["ca_bundle"] = patch.ca_bundle
        await self._update(t.credentials, credential_id, "credential", changes)
        return await self.credential_view(credential_id)

    async def replace_auth(self, credential_id: str, *, expected_version: int, auth: Auth) -> bool:
        """Store refreshed OAuth2 tokens unless someone else changed the credential meanwhile."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(t.credentials)
                .where(t.credentials.c.id == credential_id, t.credentials.c.version == expected_version)
                .values(
                    auth_secret=self.keyring.seal(json.dumps(reveal(auth))),
                    version=expected_version + 1,
                    updated_at=utcnow(),
                )
            )
        return bool(result.rowcount)

    async def delete_credential(self, credential_id: str) -> None:
        async with self.engine.begin() as conn:
            used = (
                (await conn.execute(select(t.syncs.c.id).where(t.syncs.c.credential_id == credential_id)))
                .scalars()
                .all()
            )
            if used:
                raise Conflict(
                    f"credential {credential_id!r} is used by sync(s) {', '.join(sorted(used))}; "
                    "delete or re-point them first",
                    syncs=sorted(used),
                )
            result = await conn.execute(delete(t.credentials).where(t.credentials.c.id == credential_id))
        if not result.rowcount:
            raise NotFound(f"credential {credential_id!r} not found")

    def _credential_view(self, row: Row[Any]) -> CredentialView:
        auth = json.loads(self.keyring.open(row.auth_secret))
        return CredentialView(
            id=row.id,
            provider=row.provider,
            base_url=row.base_url,
            auth=masked_auth(auth),
            rate_limit=row.rate_limit,
            timeouts=row.timeouts,
            ca_bundle=row.ca_bundle,
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
        )

    # --- syncs --------------------------------------------------------------------------------------

    async def create_sync(self, body: SyncIn) -> SyncView:
        now = utcnow()
        values = {
            "id": body.id or new_id("sync"),
            "credential_id": body.credential_id,
            "collections": _check_collections(body.collections),
            "options": body.options,
            "created_at": now,
            "updated_at": now,
        }
        async with self.engine.begin() as conn:
            await self._require_credential(conn, body.credential_id, body.collections)
            await _insert_unique(conn, t.syncs, values, "sync")
        return await self.sync_view(str(values["id"]))

    async def sync_view(self, sync_id: str) -> SyncView:
        return _sync_view(await self._row(t.syncs, sync_id, "sync"))

    async def list_syncs(self) -> list[SyncView]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.syncs).order_by(t.syncs.c.id))).all()
        return [_sync_view(row) for row in rows]

    async def sync(self, sync_id: str) -> Sync:
        row = await self._row(t.syncs, sync_id, "sync")
        return Sync(row.id, row.credential_id, tuple(row.collections), dict(row.options))

    async def patch_sync(self, sync_id: str, patch: SyncPatch) -> SyncView:
        current = await self.sync(sync_id)
        changes = {k: v for k, v in patch.model_dump(exclude_unset=True).items() if v is not None}
        async with self.engine.begin() as conn:
            await self._require_credential(
                conn,
                changes.get("credential_id", current.credential_id),
                changes.get("collections", list(current.collections)),
            )
        if "collections" in changes:
            changes["collections"] = _check_collections(changes["collections"])
        await self._update(t.syncs, sync_id, "sync", changes)
        return await self.sync_view(sync_id)

    async def delete_sync(self, sync_id: str) -> None:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(t.syncs).where(t.syncs.c.id == sync_id))
        if not result.rowcount:
            raise NotFound(f"sync {sync_id!r} not found")

    async def _require_credential(self, conn: AsyncConnection, credential_id: str, collections: list[str]) -> None:
        provider = (
            await conn.execute(select(t.credentials.c.provider).where(t.credentials.c.id == credential_id))
        ).scalar()
        if provider is None:
            raise NotFound(f"credential {credential_id!r} not found", field="credential_id")
        wrong = [c for c in collections if c.split(":", 1)[0] != provider]
        if wrong:
            raise InvalidRequest(
                f"collections: {', '.join(wrong)} do not belong to provider {provider!r} of the credential",
                field="collections",
            )

    # --- consumers ----------------------------------------------------------------------------------

    async def create_consumer(self, body: ConsumerIn) -> ConsumerView:
        now = utcnow()
        settings, secret = self._split_settings(reveal(body))
        values = {
            "id": settings.pop("id") or new_id("consumer"),
            "kind": settings.pop("kind"),
            "sync_id": settings.pop("sync_id"),
            "collections": settings.pop("collections"),
            "settings": settings,
            "settings_secret": secret,
            "position": 0,
            "status": "active",
            "created_at": now,
            "updated_at": now,
        }
        async with self.engine.begin() as conn:
            if values["sync_id"] is not None:
                await self._row_in(conn, t.syncs, values["sync_id"], "sync")
            await _insert_unique(conn, t.consumers, values, "consumer")
            values["position"] = await _max_seq(conn)
            await conn.execute(
                update(t.consumers).where(t.consumers.c.id == values["id"]).values(position=values["position"])
            )
        return await self.consumer_view(values["id"])

    async def consumer_view(self, consumer_id: str) -> ConsumerView:
        async with self.engine.connect() as conn:
            row = await self._row_in(conn, t.consumers, consumer_id, "consumer")
            pending = await _pending(conn, consumer_id)
        return self._consumer_view(row, pending)

    async def list_consumers(self) -> list[ConsumerView]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.consumers).order_by(t.consumers.c.id))).all()
            counts = dict(
                (
                    await conn.execute(
                        select(t.deliveries.c.consumer_id, func.count()).group_by(t.deliveries.c.consumer_id)
                    )
                )
                .tuples()
                .all()
            )
        return [self._consumer_view(row, counts.get(row.id, 0)) for row in rows]

    async def consumer(self, consumer_id: str) -> Consumer:
        return self._consumer(await self._row(t.consumers, consumer_id, "consumer"))

    async def all_consumers(self) -> list[Consumer]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.consumers).order_by(t.consumers.c.id))).all()
        return [self._consumer(row) for row in rows]

    async def patch_consumer(self, consumer_id: str, patch: ConsumerPatch) -> ConsumerView:
        current = await self.consumer(consumer_id)
        merged: dict[str, Any] = {
            "id": current.id,
            "kind": current.kind,
            "sync_id": current.sync_id,
            "collections": list(current.collections) if current.collections is not None else None,
            **current.settings,
        }
        merged.update({k: v for k, v in reveal(patch).items() if k in patch.model_fields_set})
        body = _CONSUMER.validate_python(merged)  # the same rules as on create
        settings, secret = self._split_settings(reveal(body))
        changes = {
            "sync_id": settings.pop("sync_id"),
            "collections": settings.pop("collections"),
            "settings": {k: v for k, v in settings.items() if k not in ("id", "kind")},
            "settings_secret": secret,
        }
        await self._update(t.consumers, consumer_id, "consumer", changes)
        return await self.consumer_view(consumer_id)

    async def delete_consumer(self, consumer_id: str) -> None:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(t.consumers).where(t.consumers.c.id == consumer_id))
            await conn.execute(delete(t.deliveries).where(t.deliveries.c.consumer_id == consumer_id))
        if not result.rowcount:
            raise NotFound(f"consumer {consumer_id!r} not found")

    async def set_consumer_status(self, consumer_id: str, status: str, detail: str | None) -> None:
        await self._update(t.consumers, consumer_id, "consumer", {"status": status, "status_detail": detail})

    def _split_settings(self, data: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        secret = {k: data.pop(k) for k in _SECRET_SETTINGS if k in data}
        return data, (self.keyring.seal(json.dumps(secret)) if secret else None)

    def _consumer(self, row: Row[Any]) -> Consumer:
        settings = dict(row.settings)
        if row.settings_secret:
            settings.update(json.loads(self.keyring.open(row.settings_secret)))
        collections = tuple(row.collections) if row.collections is not None else None
        return Consumer(row.id, row.kind, row.sync_id, collections, settings, row.position, row.status)

    def _consumer_view(self, row: Row[Any], pending: int) -> ConsumerView:
        settings = dict(row.settings)
        if row.settings_secret:
            secret = json.loads(self.keyring.open(row.settings_secret))
            if "secret" in secret:
                settings["secret"] = "***"
            if "dsn" in secret:
                settings["dsn"] = mask_dsn(secret["dsn"])
        return ConsumerView(
            id=row.id,
            kind=row.kind,
            sync_id=row.sync_id,
            collections=row.collections,
            settings=settings,
            position=row.position,
            pending=pending,
            status=row.status,
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
        )

    # --- declarative objects ([[credentials]], [[syncs]], [[consumers]] in the config) ------------

    async def upsert_credential(self, body: CredentialIn) -> None:
        """Create or bring in line with the config; OAuth2 tokens refreshed at runtime are kept."""
        assert body.id is not None
        try:
            current = await self.credential(body.id)
        except NotFound:
            await self.create_credential(body)
            return
        patch = CredentialPatch(
            base_url=body.base_url,
            auth=body.auth,
            rate_limit=body.rate_limit,
            timeouts=body.timeouts,
            ca_bundle=body.ca_bundle,
        )
        if _same_oauth_client(current.auth, body.auth) or reveal(current.auth) == reveal(body.auth):
            patch = patch.model_copy(update={"auth": None})
        await self.patch_credential(body.id, patch)

    async def upsert_sync(self, body: SyncIn) -> None:
        assert body.id is not None
        try:
            await self.sync(body.id)
        except NotFound:
            await self.create_sync(body)
            return
        await self.patch_sync(
            body.id, SyncPatch(credential_id=body.credential_id, collections=body.collections, options=body.options)
        )

    async def upsert_consumer(self, body: ConsumerIn) -> None:
        assert body.id is not None
        try:
            current = await self.consumer(body.id)
        except NotFound:
            await self.create_consumer(body)
            return
        if current.kind != body.kind:
            raise Conflict(f"consumer {body.id!r} exists with kind {current.kind!r}; kinds never change")
        fields = {k: v for k, v in reveal(body).items() if k not in ("id", "kind")}
        await self.patch_consumer(
            body.id, ConsumerPatch.model_validate({k: v for k, v in fields.items() if k in ConsumerPatch.model_fields})
        )

    # --- key rotation ---------------------------------------------------------------------------------

    async def rotate_keys(self) -> int:
        """Re-seal every stored secret with the newest key, all in one transaction; re-runs are no-ops."""
        changed = 0
        async with self.engine.begin() as conn:
            for table, column in ((t.credentials, "auth_secret"), (t.consumers, "settings_secret")):
                rows = (await conn.execute(select(table.c.id, table.c[column]))).all()
                for object_id, sealed in rows:
                    if sealed is None:
                        continue
                    resealed = self.keyring.reseal(sealed)
                    if resealed != sealed:
                        await conn.execute(update(table).where(table.c.id == object_id).values({column: resealed}))
                        changed += 1
        return changed

    # --- shared -------------------------------------------------------------------------------------

    async def _row(self, table: Table, object_id: str, kind: str) -> Row[Any]:
        async with self.engine.connect() as conn:
            return await self._row_in(conn, table, object_id, kind)

    @staticmethod
    async def _row_in(conn: AsyncConnection, table: Table, object_id: str, kind: str) -> Row[Any]:
        row: Row[Any] | None = (await conn.execute(select(table).where(table.c.id == object_id))).first()
        if row is None:
            raise NotFound(f"{kind} {object_id!r} not found")
        return row

    async def _update(self, table: Table, object_id: str, kind: str, changes: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(table).where(table.c.id == object_id).values(**changes, updated_at=utcnow())
            )
        if not result.rowcount:
            raise NotFound(f"{kind} {object_id!r} not found")


def _dump(model: RateLimitOverride | TimeoutsOverride | None) -> dict[str, Any] | None:
    return model.model_dump(exclude_none=True) if model is not None else None


def _same_oauth_client(stored: Auth, declared: Auth) -> bool:
    return (
        stored.type == declared.type == "oauth2"
        and getattr(stored, "client_id", None) == getattr(declared, "client_id", None)
        and getattr(stored, "token_url", None) == getattr(declared, "token_url", None)
    )


def _check_collections(collections: list[str]) -> list[str]:
    return list(dict.fromkeys(collections))  # keep order, drop repeats


def _sync_view(row: Row[Any]) -> SyncView:
    return SyncView(
        id=row.id,
        credential_id=row.credential_id,
        collections=row.collections,
        options=row.options,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


async def _insert_unique(conn: AsyncConnection, table: Table, values: dict[str, Any], kind: str) -> None:
    try:
        async with conn.begin_nested():
            await conn.execute(insert(table).values(**values))
    except IntegrityError:
        raise Conflict(f"{kind} {values['id']!r} already exists", field="id") from None


async def _max_seq(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.coalesce(func.max(t.events.c.seq), 0)))).scalar_one())


async def _pending(conn: AsyncConnection, consumer_id: str) -> int:
    query = select(func.count()).select_from(t.deliveries).where(t.deliveries.c.consumer_id == consumer_id)
    return int((await conn.execute(query)).scalar_one())
