"""Consumers in the store: non-secret settings in clear, the webhook secret and DSN sealed."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.models import (
    MASK,
    ConsumerIn,
    ConsumerPatch,
    ConsumerView,
    mask_dsn,
    reveal,
)
from gateway.domain.objects import Consumer
from gateway.errors import Conflict, NotFound, invalid_request
from gateway.store import tables as t
from gateway.store.db import as_utc, utcnow
from gateway.store.rows import Rows, insert_unique, new_id, update_one

_CONSUMER = TypeAdapter[Any](ConsumerIn)
_VIEW = TypeAdapter[Any](ConsumerView)
_SECRET_SETTINGS = ("secret", "dsn")
_ALL_CONSUMERS = select(t.consumers).order_by(t.consumers.c.id)  # built once: every page of a sync reads it


async def _hold_sync(conn: AsyncConnection, sync_id: str | None) -> None:
    """404 unless the sync exists, which it then does until ``conn`` commits.

    Called after the consumer's own write: a delete of the sync checks for readers after its own
    delete, so whichever of the two writes second sees the other (SQLite runs one writer at a time;
    on PostgreSQL the shared row lock makes the delete wait, or this read find the row gone). A check
    before the write let a consumer be bound to a sync deleted at the same moment, receiving nothing.
    """
    if sync_id is None:
        return
    query = select(t.syncs.c.id).where(t.syncs.c.id == sync_id).with_for_update(read=True)
    if (await conn.execute(query)).first() is None:
        raise NotFound(f"sync {sync_id!r} not found", field="sync_id")


class ConsumerRows(Rows):
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
            await insert_unique(conn, t.consumers, values, "consumer")
            await _hold_sync(conn, values["sync_id"])
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

    async def all_consumers(self, conn: AsyncConnection | None = None) -> list[Consumer]:
        """Every consumer; pass the caller's ``conn`` to read them in its transaction (no second connection)."""
        if conn is None:
            async with self.engine.connect() as own:
                return await self.all_consumers(own)
        rows = (await conn.execute(_ALL_CONSUMERS)).all()
        return [self._consumer(row) for row in rows]

    async def patch_consumer(self, consumer_id: str, patch: ConsumerPatch) -> ConsumerView:
        """Merge ``patch`` into the stored consumer, checked as a create of the result.

        The row is touched first, so it is this transaction's until the commit (PostgreSQL's row lock,
        SQLite's one writer): the merge starts from the latest settings, and another PATCH committed
        meanwhile is not overwritten by an older copy of them (it was when they were read before)."""
        patched = {k: v for k, v in reveal(patch).items() if k in patch.model_fields_set}
        async with self.engine.begin() as conn:
            await update_one(conn, t.consumers, consumer_id, "consumer", {})
            current = self._consumer(await self._row_in(conn, t.consumers, consumer_id, "consumer"))
            merged: dict[str, Any] = {
                "id": current.id,
                "kind": current.kind,
                "sync_id": current.sync_id,
                "collections": list(current.collections) if current.collections is not None else None,
                **current.settings,
                **patched,
            }
            try:
                body = _CONSUMER.validate_python(merged)  # the same rules as on create, fields of its kind only
            except ValidationError as exc:
                raise invalid_request(exc) from None
            settings, secret = self._split_settings(reveal(body))
            changes = {
                "sync_id": settings.pop("sync_id"),
                "collections": settings.pop("collections"),
                "settings": {k: v for k, v in settings.items() if k not in ("id", "kind")},
                "settings_secret": secret,
            }
            await update_one(conn, t.consumers, consumer_id, "consumer", changes)
            if changes["sync_id"] != current.sync_id:  # as on create: 404
                await _hold_sync(conn, changes["sync_id"])
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
                settings["secret"] = MASK
            if "dsn" in secret:
                settings["dsn"] = mask_dsn(secret["dsn"])
        view: ConsumerView = _VIEW.validate_python(
            {
                **settings,
                "id": row.id,
                "kind": row.kind,
                "sync_id": row.sync_id,
                "collections": row.collections,
                "position": row.position,
                "pending": pending,
                "status": row.status,
                "status_detail": row.status_detail if row.status == "failing" else None,
                "created_at": as_utc(row.created_at),
                "updated_at": as_utc(row.updated_at),
            }
        )
        return view

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


async def _max_seq(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.coalesce(func.max(t.events.c.seq), 0)))).scalar_one())


async def _pending(conn: AsyncConnection, consumer_id: str) -> int:
    query = select(func.count()).select_from(t.deliveries).where(t.deliveries.c.consumer_id == consumer_id)
    return int((await conn.execute(query)).scalar_one())
