"""Syncs in the store: a credential bound to the collections that may be mutated and streamed.

A sync also carries its change-capture state (gateway/syncs). Every cursor write bumps
``generation`` and is conditional on the generation its writer read, so two pollers that briefly
overlap (a lease taken over from a stalled replica) cannot both commit the same page: the second
one's transaction is refused (``advance`` returns None) and it re-reads. A backfill request bumps
it too, which makes the running poller start over at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import bindparam, case, delete, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.models import (
    SyncIn,
    SyncOptions,
    SyncPatch,
    SyncView,
)
from gateway.domain.objects import Sync
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.store import tables as t
from gateway.store.changes import bump
from gateway.store.db import as_utc, utcnow
from gateway.store.rows import Rows, insert_unique, new_id, update_one

_OPTIONS: TypeAdapter[dict[str, str]] = TypeAdapter(SyncOptions)
# Raises InvalidRequest naming the field when ``provider`` cannot read one of the collections.
CollectionCheck = Callable[[str, list[str], dict[str, str]], None]


class SyncRows(Rows):
    collection_check: CollectionCheck | None = None

    async def create_sync(self, body: SyncIn) -> SyncView:
        now = utcnow()
        values = {
            "id": body.id or new_id("sync"),
            "credential_id": body.credential_id,
            "collections": _check_collections(body.collections),
            "options": body.options,
            "created_at": now,
            "updated_at": now,
            "state": "backfilling",
            "paused": False,
            "cursor": {},
            "progress": {},
            "generation": 0,
        }
        try:
            async with self.engine.begin() as conn:
                await self._require_credential(conn, body.credential_id, body.collections, body.options)
                await insert_unique(conn, t.syncs, values, "sync")
        except Conflict:  # the id is taken, or the credential was deleted since the check (its foreign key)
            async with self.engine.connect() as conn:
                await self._require_credential(conn, body.credential_id, body.collections, body.options)
            raise
        return await self.sync_view(str(values["id"]))

    async def sync_view(self, sync_id: str) -> SyncView:
        return _sync_view(await self._row(t.syncs, sync_id, "sync"))

    async def list_syncs(self) -> list[SyncView]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.syncs).order_by(t.syncs.c.id))).all()
        return [_sync_view(row) for row in rows]

    async def all_syncs(self) -> list[Sync]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.syncs).order_by(t.syncs.c.id))).all()
        return [sync_of(row) for row in rows]

    async def sync(self, sync_id: str) -> Sync:
        return sync_of(await self._row(t.syncs, sync_id, "sync"))

    async def patch_sync(self, sync_id: str, patch: SyncPatch) -> SyncView:
        """Apply ``patch`` once the credential, collections and options it leaves are checked together.

        The row is touched first, so it is this transaction's until the commit (PostgreSQL's row lock,
        SQLite's one writer): the check sees the latest sync, and a PATCH committed meanwhile (another
        credential, other collections) cannot make up with this one a pair that neither check allowed."""
        changes = {k: v for k, v in patch.model_dump(exclude_unset=True).items() if v is not None}
        if "collections" in changes:
            changes["collections"] = _check_collections(changes["collections"])
        try:
            async with self.engine.begin() as conn:
                await update_one(conn, t.syncs, sync_id, "sync", {})
                current = sync_of(await self._row_in(conn, t.syncs, sync_id, "sync"))
                if current.options_error is not None and "options" not in changes:
                    raise InvalidRequest(current.options_error, field="options")
                await self._require_credential(
                    conn,
                    changes.get("credential_id", current.credential_id),
                    changes.get("collections", list(current.collections)),
                    changes.get("options", current.options),
                )
                await update_one(conn, t.syncs, sync_id, "sync", changes)
                await bump(conn, "syncs")
        except IntegrityError:  # the credential was deleted since the check: its foreign key is the real guard
            raise NotFound(f"credential {changes['credential_id']!r} not found", field="credential_id") from None
        return await self.sync_view(sync_id)

    async def delete_sync(self, sync_id: str) -> None:
        """Refused while a consumer reads the sync (as a credential used by a sync): it would be left
        bound to nothing, receiving no event again."""
        async with self.engine.begin() as conn:
            # Delete first, then look for readers in the same transaction (rolled back if any): a consumer
            # created meanwhile holds the sync's row until it commits (store/consumers.py, _hold_sync).
            result = await conn.execute(delete(t.syncs).where(t.syncs.c.id == sync_id))
            readers = (
                (await conn.execute(select(t.consumers.c.id).where(t.consumers.c.sync_id == sync_id))).scalars().all()
            )
            if readers:
                raise Conflict(
                    f"sync {sync_id!r} is read by consumer(s) {', '.join(sorted(readers))}; "
                    "delete or re-point them first",
                    consumers=sorted(readers),
                )
            if result.rowcount:
                await bump(conn, "syncs")
        if not result.rowcount:
            raise NotFound(f"sync {sync_id!r} not found")

    async def _require_credential(
        self, conn: AsyncConnection, credential_id: str, collections: list[str], options: dict[str, str]
    ) -> None:
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
        if self.collection_check is not None:  # the providers' rule, given by whoever opens the store
            self.collection_check(provider, collections, options)

    async def set_sync_failing(self, sync_id: str, error: str) -> None:
        """Mark a failed poll; the cursor stays where it was (the next attempt reads the same page)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t.syncs)
                .where(t.syncs.c.id == sync_id)
                .values(state="failing", last_error=error[:1000], last_poll_at=utcnow(), throttled_until=None)
            )

    async def set_sync_throttled(self, sync_id: str, until: datetime, reading: str) -> None:
        """Mark a poll refused by a rate limit: the sync waits until ``until``, and is not failing. A
        ``failing`` state (an earlier error, no page read since) becomes ``reading``, the state its
        cursor is in (``backfilling`` or ``live``); any other state is the last page's and stays."""
        syncs = t.syncs.c
        async with self.engine.begin() as conn:
            await conn.execute(
                update(t.syncs)
                .where(syncs.id == sync_id)
                .values(
                    state=case((syncs.state == "failing", reading), else_=syncs.state),
                    last_error=None,
                    last_poll_at=utcnow(),
                    throttled_until=until,
                )
            )

    async def pause_sync(self, sync_id: str, paused: bool) -> SyncView:
        await self._update(t.syncs, sync_id, "sync", {"paused": paused})
        return await self.sync_view(sync_id)

    async def backfill_sync(self, sync_id: str) -> SyncView:
        """Read every record again from the start (unchanged ones make no event); resumes a paused sync.

        The generation is bumped in the statement (not read first and written plus one): a poller's
        page committed in between would otherwise leave the generation that poller holds, and its
        next page would write its cursor over this reset."""
        values: dict[str, Any] = {
            "cursor": {},
            "progress": {},
            "state": "backfilling",
            "last_error": None,
            "paused": False,
            "generation": t.syncs.c.generation + 1,
        }
        await self._update(t.syncs, sync_id, "sync", values)
        return await self.sync_view(sync_id)

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


# The cursor write, built once (a page runs it): the SET clause follows the values passed.
_ADVANCE = update(t.syncs).where(
    t.syncs.c.id == bindparam("read_id"),
    t.syncs.c.generation == bindparam("read_generation"),
    t.syncs.c.paused.is_(False),
)


async def advance(
    conn: AsyncConnection,
    sync_id: str,
    generation: int,
    *,
    cursor: dict[str, Any],
    progress: dict[str, int],
    state: str,
    caught_up_at: datetime | None = None,
) -> int | None:
    """Store the cursor in ``conn``'s transaction if nobody else moved it; the new generation or None."""
    values: dict[str, Any] = {
        "read_id": sync_id,
        "read_generation": generation,
        "cursor": cursor,
        "progress": progress,
        "state": state,
        "last_error": None,
        "generation": generation + 1,
        "last_poll_at": utcnow(),
        "throttled_until": None,
    }
    if caught_up_at is not None:
        values["caught_up_at"] = caught_up_at
    result = await conn.execute(_ADVANCE, values)
    return generation + 1 if result.rowcount else None


def _check_collections(collections: list[str]) -> list[str]:
    return list(dict.fromkeys(collections))  # keep order, drop repeats


def stored_options(stored: Any) -> tuple[dict[str, str], str | None]:
    """The stored options as this version reads them, and why it refuses them (None: it does not).

    An older version may have stored what this one refuses (a number out of range, a key since
    dropped, a value that is not text): checked on every read, as a request's are, so the refusal
    stays with its sync (failing, with this reason) instead of breaking every view or poller later.
    Refused options are shown as stored, their values as text.
    """
    try:
        return _OPTIONS.validate_python(stored), None
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            message = str(error["msg"]).removeprefix("Value error, ")  # ours already name the option
            where = ".".join(["options", *(str(part) for part in error["loc"])])
            problems.append(message if message.startswith("options.") else f"{where}: {message}")
    shown = (
        {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in stored.items()}
        if isinstance(stored, dict)
        else {}
    )
    return shown, f"options stored by an older version are refused: {'; '.join(problems)}; PATCH the sync's options"


def sync_of(row: Row[Any]) -> Sync:
    options, options_error = stored_options(row.options)
    return Sync(
        id=row.id,
        credential_id=row.credential_id,
        collections=tuple(row.collections),
        options=options,
        options_error=options_error,
        state=row.state,
        paused=row.paused,
        cursor=dict(row.cursor or {}),
        progress=dict(row.progress or {}),
        generation=row.generation,
        last_error=row.last_error,
        last_poll_at=as_utc(row.last_poll_at),
        caught_up_at=as_utc(row.caught_up_at),
    )


def _sync_view(row: Row[Any]) -> SyncView:
    sync = sync_of(row)
    state = "idle" if not sync.collections else "paused" if sync.paused else sync.state
    if sync.options_error is not None and state != "idle":
        state = "failing"
    now = utcnow()
    lag = (now - sync.caught_up_at).total_seconds() if sync.caught_up_at and sync.collections else None
    throttled = as_utc(row.throttled_until)
    return SyncView(
        id=row.id,
        credential_id=row.credential_id,
        collections=row.collections,
        options=sync.options,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        state=state,
        last_error=(sync.options_error or sync.last_error) if state == "failing" else None,
        progress=sync.progress,
        cursor=sync.cursor,
        last_poll_at=sync.last_poll_at,
        lag_seconds=None if lag is None else round(max(lag, 0.0), 3),
        throttled_until=throttled if throttled and throttled > now and state in ("backfilling", "live") else None,
    )
