"""The store's schema as SQLAlchemy Core tables, the same on SQLite and PostgreSQL.

Alembic migrations in ``migrations/versions`` create exactly these tables; a test compares the two.
Times that are compared in queries (leases, visibility, expiry) are epoch seconds in floats so that
both databases order them the same way; times shown to users are timezone-aware datetimes.
Columns named ``*_secret`` hold vault ciphertext only, never plaintext. Columns of ``OutsideText``
hold text from outside the gateway (an upstream's error message), made storable on the way in.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

metadata = MetaData()
Json = JSON().with_variant(JSONB(), "postgresql")
Seq = BigInteger().with_variant(Integer(), "sqlite")  # SQLite only autoincrements INTEGER keys
# A NUL, which PostgreSQL's text refuses, or a lone UTF-16 surrogate, which no UTF-8 text can hold.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class OutsideText(TypeDecorator[str]):
    """Text an upstream (or a consumer's receiver) wrote, every NUL and lone surrogate stored as U+FFFD.

    An upstream error message holding one failed the write of the sync's ``last_error`` on PostgreSQL
    (the sync then showed no error at all); replaced on SQLite too, so both stores read the same.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else _UNSTORABLE.sub("\ufffd", value)


def _timestamps() -> list[Column[Any]]:
    return [
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    ]


credentials = Table(
    "credentials",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("provider", String(32), nullable=False),
    Column("base_url", Text, nullable=False),
    Column("auth_type", String(16), nullable=False),
    Column("auth_secret", Text, nullable=False),  # vault ciphertext of the whole auth object
    Column("rate_limit", Json, nullable=True),
    Column("timeouts", Json, nullable=True),
    Column("ca_bundle", Text, nullable=True),
    Column("version", Integer, nullable=False, default=1),  # bumped on every auth change (OAuth2 refresh)
    *_timestamps(),
)

syncs = Table(
    "syncs",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("credential_id", String(128), ForeignKey("credentials.id"), nullable=False, index=True),
    Column("collections", Json, nullable=False),
    Column("options", Json, nullable=False),
    *_timestamps(),
    # Change capture (gateway/syncs): written by the one replica polling the sync, and by pause/resume/backfill.
    Column("state", String(16), nullable=False, default="backfilling"),  # backfilling | live | failing
    Column("last_error", OutsideText, nullable=True),
    Column("paused", Boolean, nullable=False, default=False),
    Column("cursor", Json, nullable=False, default=dict),  # collection id -> the capture's cursor
    Column("progress", Json, nullable=False, default=dict),  # collection id -> records read by the backfill
    Column("generation", Integer, nullable=False, default=0),  # bumped by every cursor write: a stale poller's fails
    Column("last_poll_at", DateTime(timezone=True), nullable=True),
    Column("caught_up_at", DateTime(timezone=True), nullable=True),
    Column("throttled_until", DateTime(timezone=True), nullable=True),  # a refusal's pause: waiting, not failing
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("scopes", Json, nullable=False),
    Column("only_ids", Json, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),  # written at most once a minute per token
    Column("priority", String(8), nullable=False, server_default="normal"),  # high | normal | low
    Column("weight", Integer, nullable=False, server_default="1"),  # fair-share weight, 1..1000
    Column("expires_at", DateTime(timezone=True), nullable=True),  # refused like a revoked token after it
)

# Web console sign-ins: the session id and the admin token are kept only as SHA-256 hashes; a
# session is valid while its row is unexpired AND its token's row still exists (revoking ends it).
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("token_hash", String(64), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", Float, nullable=False, index=True),  # epoch seconds
)

consumers = Table(
    "consumers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("sync_id", String(128), nullable=True),
    Column("collections", Json, nullable=True),
    Column("settings", Json, nullable=False),  # non-secret settings (url, batch_size, ...)
    Column("settings_secret", Text, nullable=True),  # vault ciphertext of secret settings (secret, dsn)
    Column("position", Seq, nullable=False, default=0),  # highest acknowledged seq
    Column("status", String(16), nullable=False, default="active"),
    Column("status_detail", OutsideText, nullable=True),
    *_timestamps(),
)

events = Table(
    "events",
    metadata,
    Column("seq", Seq, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("sync_id", String(128), nullable=False),
    Column("collection_id", String(256), nullable=False),
    Column("upstream_id", String(256), nullable=False),
    Column("action", String(8), nullable=False),
    Column("record", Json, nullable=False),
    Column("changes", Json, nullable=False),
    Column("inserted_at", DateTime(timezone=True), nullable=False),
)

# One row per (consumer, event) still to be acknowledged: fan-out happens when the event is appended.
deliveries = Table(
    "deliveries",
    metadata,
    Column("consumer_id", String(128), primary_key=True),
    Column("seq", Seq, primary_key=True),
    Column("ack_id", String(64), nullable=True, unique=True),
    Column("visible_at", Float, nullable=False),  # epoch seconds; receivable when <= now
    Column("attempts", Integer, nullable=False, default=0),
    Index("ix_deliveries_visible", "consumer_id", "visible_at", "seq"),
)

records = Table(
    "records",
    metadata,
    Column("sync_id", String(128), primary_key=True),
    Column("collection_id", String(256), primary_key=True),
    Column("upstream_id", String(256), primary_key=True),
    Column("data", Json, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("upstream_updated_at", DateTime(timezone=True), nullable=True),
    Column("inserted_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(300), primary_key=True),  # "<token name>:<client key>"
    Column("request_hash", String(64), nullable=False),
    Column("status", Integer, nullable=True),  # null while the first request is in progress
    Column("response", Json, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    Column("lease", String(256), nullable=True),  # the claiming replica's lease: a dead claimer's claim lapses
)

# Write-ahead intent of a mutation: inserted before its first upstream write, advanced in the transaction
# that appends each chunk's events, removed with the answer. A row left behind is what recovery works on.
mutation_journal = Table(
    "mutation_journal",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("sync_id", String(128), nullable=False),
    Column("collection_id", String(256), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("items", Json, nullable=False),  # [[upstream_id or null, data], ...] in request order
    Column("seed", String(300), nullable=False),  # Stripe's per-record Idempotency-Keys derive from it
    Column("idempotency_key", String(300), nullable=True, index=True),
    Column("lease", String(256), nullable=True),  # the replica running or recovering it; null: up for recovery
    Column("state", String(16), nullable=False),  # running | unknown
    Column("progress", Integer, nullable=False, default=0),  # items[:progress] are settled in the stream
    Column("applied", Json, nullable=False),  # upstream ids whose change is in the stream, request order
    Column("written", Json, nullable=True),  # ids the upstream confirmed for the chunk at progress, if noted
    Column("detail", OutsideText, nullable=True),  # why recovery stopped or failed, for operators
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_mutation_journal_state", "state", "lease"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("owner", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
)

# One row per serving process, refreshed every few seconds: which encryption keys it holds, so that
# ``gateway keys rotate`` re-encrypts only once every live replica can open the new ciphertext.
replicas = Table(
    "replicas",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("key_ids", Json, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
)

# One counter per object kind that replicas cache, bumped in the transaction of every change
# (store/changes.py): a replica reads it every second to know when to re-check its cache.
changes = Table(
    "changes",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("generation", BigInteger, nullable=False),
)
