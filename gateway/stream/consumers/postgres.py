"""Postgres consumers: materialize each collection into a table of the user's PostgreSQL database.

Table ``<table_prefix><provider>_<object>`` (sanitized to a lower-case identifier, at most 63
characters), created when missing. Each event upserts its record by ``upstream_id`` inside one
transaction per batch, in stream order; the row keeps the ``seq`` it came from and an upsert only
applies when its seq is newer, so a redelivered batch (after a crash before the ack) changes nothing.
The worker acknowledges the batch only after this transaction committed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import asyncpg

from gateway.domain.models import Event, dsn_endpoint
from gateway.domain.objects import Consumer
from gateway.egress import EgressDenied, EgressPolicy
from gateway.stream.consumers.webhook import DeliveryFailed

_UNSAFE = re.compile(r"[^a-z0-9_]+")
_MAX_IDENTIFIER = 63


def table_name(prefix: str, collection_id: str) -> str:
    """``gateway_`` + ``salesforce:Contact`` -> ``gateway_salesforce_contact``."""
    provider, _, obj = collection_id.partition(":")
    name = _UNSAFE.sub("_", f"{prefix}{provider}_{obj}".lower()).strip("_") or "gateway_records"
    if name[0].isdigit():
        name = "_" + name
    return name[:_MAX_IDENTIFIER]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _create_sql(table: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (upstream_id text PRIMARY KEY, data jsonb NOT NULL, "
        "deleted boolean NOT NULL DEFAULT false, upstream_updated_at timestamptz, "
        "updated_at timestamptz NOT NULL, seq bigint NOT NULL)"
    )


def _upsert_sql(table: str) -> str:
    # ``table`` is a sanitized, quoted identifier (see table_name); every value is a bind parameter.
    return (
        f"INSERT INTO {table} AS t (upstream_id, data, deleted, upstream_updated_at, updated_at, seq) "  # noqa: S608
        "VALUES ($1, $2::jsonb, $3, $4, $5, $6) ON CONFLICT (upstream_id) DO UPDATE SET "
        "data = EXCLUDED.data, deleted = EXCLUDED.deleted, upstream_updated_at = EXCLUDED.upstream_updated_at, "
        "updated_at = EXCLUDED.updated_at, seq = EXCLUDED.seq WHERE t.seq < EXCLUDED.seq"
    )


class PostgresSink:
    """Applies batches for one postgres consumer over one connection (reopened after a failure).

    Every connection is checked against the egress policy first, as webhook deliveries are: without it a
    DSN on 169.254.169.254 or the gateway's own listeners was dialled."""

    def __init__(self, egress: EgressPolicy) -> None:
        self._egress = egress
        self._conn: asyncpg.Connection | None = None
        self._tables: set[str] = set()

    async def deliver(self, consumer: Consumer, events: Sequence[Event]) -> None:
        try:
            conn = await self._connection(str(consumer.settings["dsn"]))
            async with conn.transaction():
                for event in events:
                    await self._apply(conn, str(consumer.settings.get("table_prefix", "gateway_")), event)
        except EgressDenied as exc:
            raise DeliveryFailed(f"the DSN's address is refused: {exc}") from None
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.close()
            # The DSN may hold a password: report the error class only.
            raise DeliveryFailed(f"postgres error: {exc.__class__.__name__}") from None

    async def _apply(self, conn: asyncpg.Connection, prefix: str, event: Event) -> None:
        table = _quoted(table_name(prefix, event.record.collection_id))
        if table not in self._tables:
            await conn.execute(_create_sql(table))
            self._tables.add(table)
        record = event.record
        await conn.execute(
            _upsert_sql(table),
            record.upstream_id,
            json.dumps(record.data),
            record.deleted,
            record.upstream_updated_at,
            record.updated_at,
            event.seq,
        )

    async def _connection(self, dsn: str) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            try:
                host, port = dsn_endpoint(dsn)  # checked when written; stored earlier, it may not be
            except ValueError as exc:
                raise EgressDenied(f"the DSN {exc}") from None
            await self._egress.check_every_address(host, port)
            self._conn = await asyncpg.connect(dsn, timeout=10)
            self._tables.clear()
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close(timeout=5)
