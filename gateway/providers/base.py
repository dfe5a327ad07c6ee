"""Mutation translators: how each provider's own endpoints express create, update and delete.

A translator is pure: it builds ``Call``s (method, path, JSON or form body, query, headers) for one
chunk of records and reads the upstream's answers back into ``UpstreamRecord``s, without I/O, so the
same code serves the service and plain-function tests. ``mutations.service`` sends the calls through
the paced upstream client. Errors are sentences in the reference docs' form, built here once:
``Error: <Provider> validation error: `<upstream message>```.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from gateway.domain.models import SYNC_OPTION_PATTERNS
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamUnavailable,
    UpstreamValidationError,
)

Kind = Literal["create", "update", "delete"]
Query = list[tuple[str, str]]


@dataclass(frozen=True)
class Call:
    """One upstream request; exactly one of ``json``/``form`` carries the body, if any."""

    method: str
    path: str
    json: Any = None
    form: Query | None = None
    query: Query | None = None
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Item:
    """One record of the request: ``index`` is its position, ``upstream_id`` is None for creates."""

    index: int
    upstream_id: str | None
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Target:
    """Where a mutation writes: the collection's object part, the sync's options, a per-request seed."""

    obj: str
    options: Mapping[str, str]
    seed: str


@dataclass(frozen=True)
class UpstreamRecord:
    upstream_id: str
    data: dict[str, Any]
    upstream_updated_at: datetime | None


@dataclass(frozen=True)
class Written:
    """What a write call did: ``ids`` applied (chunk order), full ``records`` when the answer has them.

    ``failure`` is set when the upstream applied only part of the chunk (a 2xx with per-record
    errors); the applied ones still reach the stream before the failure is reported.
    """

    ids: list[str]
    records: list[UpstreamRecord] | None = None
    failure: GatewayError | None = field(default=None)


class Translator(ABC):
    """The mutation contract of one provider; subclasses hold no state."""

    name: ClassVar[str]  # display name used in error sentences
    # Fields the upstream manages itself: dropped from writes so a record copied from the stream works.
    read_only: ClassVar[frozenset[str]] = frozenset()
    # The upstream dedupes a resent write (Stripe's Idempotency-Key): recovery may simply send it again.
    replays_writes: ClassVar[bool] = False

    @abstractmethod
    def chunk_size(self, kind: Kind) -> int:
        """Most records one write call may carry."""

    @abstractmethod
    def write(self, kind: Kind, items: Sequence[Item], target: Target) -> Call:
        """The call that applies ``kind`` to ``items`` (at most ``chunk_size``)."""

    @abstractmethod
    def written(self, kind: Kind, items: Sequence[Item], body: Any) -> Written:
        """Read a 2xx answer of ``write``."""

    def fetch(self, ids: Sequence[str], fields: Sequence[str], target: Target) -> Call | None:
        """The call reading back full records after a write; None when the write answer has them."""
        return None

    def fetched(self, body: Any) -> list[UpstreamRecord]:
        """Read a 2xx answer of ``fetch`` (records in any order; missing ones absent)."""
        return []

    def reads(self, ids: Sequence[str], fields: Sequence[str], target: Target) -> list[Call]:
        """Calls reading records by id whatever the write answered (recovery); ``fetched`` reads them."""
        call = self.fetch(ids, fields, target)
        return [] if call is None else [call]

    @abstractmethod
    def error_message(self, body: Any) -> str:
        """The upstream's own message from an error body, as plain text."""

    def is_not_found(self, status: int, body: Any) -> bool:
        return status == 404

    def is_throttled(self, status: int, body: Any) -> bool:
        return status == 429

    def writable(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k not in self.read_only}

    # --- errors, in the reference docs' sentences ----------------------------------------------------

    def validation_error(self, message: str, status: int | None = None) -> GatewayError:
        extra = {"upstream_status": status} if status is not None else {}
        return UpstreamValidationError(f"Error: {self.name} validation error: `{message}`", **extra)

    def not_found(self, message: str) -> GatewayError:
        return NotFound(f"Error: {self.name} record not found: `{message}`")

    def error_for(self, status: int, headers: Mapping[str, str], body: Any, pause: float | None = None) -> GatewayError:
        """Map a non-2xx answer to the spec's error table.

        ``pause``: what the pacer read from the answer (``Retry-After`` in seconds or as an HTTP date,
        the provider's penalty when there is none, as Airtable's 30 s); a throttled answer asks the
        caller to wait that long, else its ``Retry-After`` seconds.
        """
        message = _clip(self.error_message(body) or f"HTTP {status}")
        if self.is_throttled(status, body):
            wait = pause if pause else _retry_after(headers)
            return RateLimited(f"Error: {self.name} rate limit exceeded: `{message}`", retry_after=max(1.0, wait))
        if status in (401, 403):
            return UpstreamAuthFailed(
                f"Error: {self.name} rejected the credential: `{message}`", upstream_status=status
            )
        if self.is_not_found(status, body):
            return self.not_found(message)
        if 400 <= status < 500:
            return self.validation_error(message, status)
        return UpstreamUnavailable(f"Error: {self.name} API error: `{message}`", upstream_status=status)


def checked(value: str | None, pattern: str, *, field: str) -> str:
    """``value`` if it fully matches ``pattern``; otherwise a 400 naming ``field``."""
    if value is None or not re.fullmatch(pattern, value):
        shown = "missing" if value is None else f"{value[:64]!r} is not valid"
        raise InvalidRequest(f"{field}: {shown} (expected {pattern})", field=field)
    return value


def option(target: Target, name: str, default: str | None = None) -> str:
    """A sync option (``options.base_id``, ``options.api_version``), or its default; missing is a 400.

    The stored options passed the same pattern (``SYNC_OPTION_PATTERNS``) on their way in and on every
    read; checked again here, as the path is built from it."""
    return checked(target.options.get(name, default), SYNC_OPTION_PATTERNS[name], field=f"sync options.{name}")


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 (``...Z``, ``+00:00`` or Salesforce's ``+0000``) to an aware UTC datetime, else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _clip(message: str) -> str:
    return " ".join(message.split())[:500]


def _retry_after(headers: Mapping[str, str]) -> float:
    try:
        return max(1.0, float(headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0
