"""Appending record changes to the stream, in the caller's transaction: the one way to append.

Syncs and mutations call, inside the transaction that must make the change durable::

    async with stream.transaction() as tx:   # gateway/stream/service.py
        events = await append_changes(tx, sync_id=..., collection_id=..., changes=..., consumers=...)
        ...  # the caller's own writes (cursor, journal) on tx.conn

``append_changes`` upserts each record's last known state in ``records``, appends one ``events`` row
per change (``seq`` ascending in the order given), fans out one ``deliveries`` row per consumer whose
filter wants the event (receivable at once) and returns the events. Pass every consumer
(``Objects.all_consumers()``); filtering happens here. It takes a ``Transaction``, not a bare
connection, so that no append can skip the wake-up: the transaction fires it once it commits.
Because the fan-out is in the same transaction, an event is never visible without its deliveries.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import TypeAdapter
from sqlalchemy import bindparam, delete, exists, insert, select, text
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.models import Event, Record
from gateway.domain.objects import Consumer
from gateway.store import tables as t
from gateway.store.db import JsonText, as_utc, utcnow
from gateway.stream.signals import Transaction

Action = Literal["insert", "update", "delete"]
_NO_CHANGES = JsonText("{}")
_TIME = TypeAdapter(datetime)  # times in ``events.record`` exactly as ``Record.model_dump(mode="json")`` has them


@dataclass(frozen=True)
class RecordChange:
    """One change the upstream applied: ``data`` is the full current record (None: delete, unknown)."""

    upstream_id: str
    action: Action
    data: dict[str, Any] | None
    upstream_updated_at: datetime | None = None


_R = t.records.c
# Statements a page runs, built once: building and keying them again was a share of each page's CPU.
_LAST_KNOWN = select(t.records).where(
    _R.sync_id == bindparam("sync_id"),
    _R.collection_id == bindparam("collection_id"),
    _R.upstream_id.in_(bindparam("upstream_ids", expanding=True)),
)
_INSERT_EVENTS_IN_ORDER = insert(t.events).returning(t.events.c.seq, sort_by_parameter_order=True)
_INSERT_DELIVERIES = insert(t.deliveries)


async def last_known(
    conn: AsyncConnection, sync_id: str, collection_id: str, upstream_ids: Sequence[str]
) -> dict[str, Record]:
    """The stored state of those records (deleted ones included), by upstream id; unknown ids are absent."""
    if not upstream_ids:
        return {}
    params = {"sync_id": sync_id, "collection_id": collection_id, "upstream_ids": list(upstream_ids)}
    rows = (await conn.execute(_LAST_KNOWN, params)).all()
    return {row.upstream_id: _record(row) for row in rows}


async def live_ids(conn: AsyncConnection, sync_id: str, collection_id: str) -> list[str]:
    """The upstream ids of the collection's records that are not deleted (a full scan's baseline)."""
    r = t.records.c
    query = select(r.upstream_id).where(r.sync_id == sync_id, r.collection_id == collection_id, r.deleted.is_(False))
    return list((await conn.execute(query)).scalars().all())


async def live_records(conn: AsyncConnection, sync_id: str, collection_id: str) -> list[Record]:
    """The collection's records that are not deleted, oldest appended first."""
    r = t.records.c
    query = (
        select(t.records)
        .where(r.sync_id == sync_id, r.collection_id == collection_id, r.deleted.is_(False))
        .order_by(r.inserted_at, r.upstream_id)
    )
    return [_record(row) for row in (await conn.execute(query)).all()]


async def append_changes(
    tx: Transaction,
    *,
    sync_id: str,
    collection_id: str,
    changes: Sequence[RecordChange],
    consumers: Sequence[Consumer],
    known: Mapping[str, Record] | None = None,
) -> list[Event]:
    """Record, log and fan out ``changes`` in ``tx``; see the module docstring.

    ``known``: what ``last_known`` answered for (at least) these records in this same transaction, when
    the caller read it to decide the changes (a sync's page): it is not read a second time.
    """
    if not changes:
        return []
    conn = tx.conn
    state = dict(known if known is not None else await last_known(conn, sync_id, collection_id, _ids(changes)))
    now = utcnow()
    planned: list[tuple[Action, Record, dict[str, Any]]] = []
    for change in changes:  # in order: a record changed twice diffs against its first change
        previous = state.get(change.upstream_id)
        record = _next_state(sync_id, collection_id, change, previous, now)
        planned.append((change.action, record, _diff(previous, record, change.action)))
        state[change.upstream_id] = record
    data = [JsonText(json.dumps(record.data)) for _, record, _ in planned]  # once per record, for every row
    latest = {record.upstream_id: (record, text) for (_, record, _), text in zip(planned, data, strict=True)}
    await _save_records(conn, list(latest.values()))
    events = await _insert_events(conn, planned, data)
    wanted = [c.id for c in consumers if c.wants(sync_id, collection_id)]
    if wanted:
        await conn.execute(
            _INSERT_DELIVERIES,
            [
                {"consumer_id": cid, "seq": e.seq, "ack_id": None, "visible_at": 0.0, "attempts": 0}
                for e in events
                for cid in wanted
            ],
        )
    await tx.announce("append")
    return events


def _ids(changes: Sequence[RecordChange]) -> list[str]:
    return [c.upstream_id for c in changes]


def _next_state(
    sync_id: str, collection_id: str, change: RecordChange, previous: Record | None, now: datetime
) -> Record:
    data = change.data if change.data is not None else (previous.data if previous else {})
    # Built from values of the right types (a capture's or a mutation's parsed JSON, times made here):
    # validating them again cost a pydantic pass per record.
    return Record.model_construct(
        sync_id=sync_id,
        collection_id=collection_id,
        upstream_id=change.upstream_id,
        upstream_updated_at=change.upstream_updated_at or (previous.upstream_updated_at if previous else None),
        data=data,
        deleted=change.action == "delete",
        inserted_at=previous.inserted_at if previous else now,
        updated_at=now,
    )


# ``records``' upsert as text, the same SQL on SQLite and PostgreSQL: SQLAlchemy cannot cache an
# ``on_conflict_do_update`` construct, so it compiled one again for every page.
_RECORD_COLUMNS = tuple(c.name for c in t.records.columns)
_UPSERT = (
    "INSERT INTO records (sync_id, collection_id, upstream_id, data, deleted, upstream_updated_at, inserted_at,"
    " updated_at) VALUES ({values}) ON CONFLICT (sync_id, collection_id, upstream_id) DO UPDATE SET data ="
    " excluded.data, deleted = excluded.deleted, upstream_updated_at = excluded.upstream_updated_at,"
    " updated_at = excluded.updated_at"
)
_UPSERT_RECORDS = text(_UPSERT.format(values=", ".join(f":{name}" for name in _RECORD_COLUMNS))).bindparams(
    *(bindparam(c.name, type_=c.type) for c in t.records.columns)
)
_UPSERT_RECORDS_SQLITE = _UPSERT.format(values=", ".join("?" for _ in _RECORD_COLUMNS))


async def _save_records(conn: AsyncConnection, records: Sequence[tuple[Record, JsonText]]) -> None:
    """One executemany upsert (each record once: PostgreSQL refuses to update a row twice in a statement)."""
    if conn.dialect.name == "sqlite":
        time = _SqliteTimes(conn)
        rows = [
            (
                r.sync_id,
                r.collection_id,
                r.upstream_id,
                data,
                r.deleted,
                *map(time, (r.upstream_updated_at, r.inserted_at, r.updated_at)),
            )
            for r, data in records
        ]
        await conn.exec_driver_sql(_UPSERT_RECORDS_SQLITE, rows)
        return
    await conn.execute(
        _UPSERT_RECORDS,
        [
            {
                "sync_id": r.sync_id,
                "collection_id": r.collection_id,
                "upstream_id": r.upstream_id,
                "data": data,
                "deleted": r.deleted,
                "upstream_updated_at": r.upstream_updated_at,
                "inserted_at": r.inserted_at,
                "updated_at": r.updated_at,
            }
            for r, data in records
        ],
    )


class _SqliteTimes:
    """SQLite's text for a time, as SQLAlchemy's ``DateTime`` writes it, each distinct time converted once.

    On SQLite the two inserts of a page go to the driver as tuples of values SQLite takes as they are
    (see ``_save_records``, ``_insert_returning_seqs``): SQLAlchemy's per-row processing of every bound
    value was the largest part of a sync page's CPU, and a page holds only a few distinct times.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        column = t.records.c.inserted_at.type
        self._text = column.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        self._seen: dict[tuple[datetime, Any], Any] = {}

    def __call__(self, value: datetime | None) -> Any:
        if value is None or self._text is None:
            return value
        key = (value, value.utcoffset())  # equal instants in other zones are written differently
        text = self._seen.get(key)
        if text is None:
            text = self._seen[key] = self._text(value)
        return text


def _diff(previous: Record | None, record: Record, action: Action) -> dict[str, Any]:
    """Previous values of the fields that changed; nothing is known on insert or for a first sighting."""
    if previous is None or action == "insert" or action == "delete":
        return {}
    before, after = previous.data, record.data
    return {key: before.get(key) for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


async def _insert_events(
    conn: AsyncConnection, planned: Sequence[tuple[Action, Record, dict[str, Any]]], data: Sequence[JsonText]
) -> list[Event]:
    """One multi-row insert; RETURNING in parameter order gives each event its seq.

    ``data``: each planned record's data, encoded; ``events.record`` is written around it (``_record_json``).
    """
    inserted_at = utcnow()
    ids = os.urandom(16 * len(planned)).hex()  # one random draw per page, 128 bits per event id
    encoded = _Encoded()
    rows = [
        (
            "evt_" + ids[32 * i : 32 * (i + 1)],
            record.sync_id,
            record.collection_id,
            record.upstream_id,
            action,
            _record_json(record, record_data, encoded),
            JsonText(json.dumps(changes)) if changes else _NO_CHANGES,
        )
        for i, ((action, record, changes), record_data) in enumerate(zip(planned, data, strict=True))
    ]
    seqs = await _insert_returning_seqs(conn, rows, inserted_at)
    return [
        Event.model_construct(
            seq=seq, id=row[0], action=action, record=record, changes=changes, inserted_at=inserted_at
        )
        for seq, row, (action, record, changes) in zip(seqs, rows, planned, strict=True)
    ]


class _Encoded:
    """JSON text of the values one append repeats (its sync, collection, times), each encoded once."""

    def __init__(self) -> None:
        self._times: dict[tuple[datetime, Any], str] = {}
        self._names: dict[str, str] = {}

    def name(self, value: str) -> str:
        text = self._names.get(value)
        if text is None:
            text = self._names[value] = json.dumps(value)
        return text

    def time(self, value: datetime | None) -> str:
        if value is None:
            return "null"
        key = (value, value.tzinfo)  # equal instants in other zones are written differently
        text = self._times.get(key)
        if text is None:
            text = self._times[key] = json.dumps(_TIME.dump_python(value, mode="json"))
        return text


def _record_json(record: Record, data: JsonText, encoded: _Encoded) -> JsonText:
    """``json.dumps(record.model_dump(mode="json"))`` byte for byte, around ``data`` encoded already."""
    return JsonText(
        f'{{"sync_id": {encoded.name(record.sync_id)}, "collection_id": {encoded.name(record.collection_id)}, '
        f'"upstream_id": {json.dumps(record.upstream_id)}, '
        f'"upstream_updated_at": {encoded.time(record.upstream_updated_at)}, '
        f'"data": {data}, "deleted": {"true" if record.deleted else "false"}, '
        f'"inserted_at": {encoded.time(record.inserted_at)}, "updated_at": {encoded.time(record.updated_at)}}}'
    )


_EVENT_COLUMNS = ("id", "sync_id", "collection_id", "upstream_id", "action", "record", "changes", "inserted_at")
_SQLITE_EVENTS_PER_STATEMENT = 100  # 800 bound values: under SQLite's historical limit of 999 per statement


@functools.lru_cache(maxsize=8)
def _sqlite_insert_events(rows: int) -> str:
    """The multi-row insert of ``rows`` events for SQLite, numbered by RETURNING."""
    values = ", ".join(["(" + ", ".join("?" * len(_EVENT_COLUMNS)) + ")"] * rows)
    return f"INSERT INTO events ({', '.join(_EVENT_COLUMNS)}) VALUES {values} RETURNING id, seq"  # noqa: S608


async def _insert_returning_seqs(
    conn: AsyncConnection, rows: Sequence[tuple[str, ...]], inserted_at: datetime
) -> list[int]:
    """The rows' ``seq`` values in parameter order, from as few statements as the dialect allows.

    ``rows``: every column of ``_EVENT_COLUMNS`` but the shared ``inserted_at``. PostgreSQL sorts a
    multi-row RETURNING by parameter order itself. On SQLite SQLAlchemy can only do that one statement
    per row (200 thread round trips per Salesforce chunk, the largest cost of a mutation), so there the
    rows go in multi-row statements of our own (values as the driver takes them, see ``_SqliteTimes``)
    and RETURNING is matched back by the event id we generated. SQLite numbers the rows of an insert in
    VALUES order under its single writer lock, so the seqs still ascend in the order given; the check
    below makes that explicit.
    """
    if conn.dialect.name == "postgresql":
        params = [dict(zip(_EVENT_COLUMNS, (*row, inserted_at), strict=True)) for row in rows]
        return list((await conn.execute(_INSERT_EVENTS_IN_ORDER, params)).scalars().all())
    at = _SqliteTimes(conn)(inserted_at)
    by_id: dict[str, int] = {}
    for start in range(0, len(rows), _SQLITE_EVENTS_PER_STATEMENT):
        chunk = rows[start : start + _SQLITE_EVENTS_PER_STATEMENT]
        values = tuple(value for row in chunk for value in (*row, at))
        by_id.update((await conn.exec_driver_sql(_sqlite_insert_events(len(chunk)), values)).tuples().all())
    seqs = [by_id[row[0]] for row in rows]
    if any(a >= b for a, b in itertools.pairwise(seqs)):
        raise RuntimeError("SQLite numbered a multi-row insert out of VALUES order")
    return seqs


def event_from_row(row: Row[Any]) -> Event:
    """An ``events`` row as the API shows it."""
    return Event(
        seq=row.seq,
        id=row.id,
        action=row.action,
        record=Record.model_validate(row.record),
        changes=row.changes,
        inserted_at=as_utc(row.inserted_at),
    )


async def purge_expired(conn: AsyncConnection, *, retention: float) -> int:
    """Delete events older than ``retention`` seconds that no consumer still has to acknowledge."""
    cutoff = utcnow() - timedelta(seconds=retention)
    pending = exists().where(t.deliveries.c.seq == t.events.c.seq)
    result = await conn.execute(delete(t.events).where(t.events.c.inserted_at < cutoff, ~pending))
    return int(result.rowcount or 0)


def _record(row: Row[Any]) -> Record:
    return Record(
        sync_id=row.sync_id,
        collection_id=row.collection_id,
        upstream_id=row.upstream_id,
        upstream_updated_at=as_utc(row.upstream_updated_at),
        data=row.data,
        deleted=row.deleted,
        inserted_at=as_utc(row.inserted_at),
        updated_at=as_utc(row.updated_at),
    )
