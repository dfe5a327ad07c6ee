"""Syncs in the store: a credential bound to the collections that may be mutated and streamed."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.models import (
    SyncIn,
    SyncPatch,
    SyncView,
)
from gateway.domain.objects import Sync
from gateway.errors import InvalidRequest, NotFound
from gateway.store import tables as t
from gateway.store.db import as_utc, utcnow
from gateway.store.rows import Rows, insert_unique, new_id


class SyncRows(Rows):
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
            await insert_unique(conn, t.syncs, values, "sync")
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
