"""Change capture, the read half of a provider: which page to ask for next and what a page says.

A ``Capture`` is pure like a mutation ``Translator``: ``request`` builds the next upstream ``Call``
from the collection's cursor (a small JSON object stored with the sync) and ``page`` reads the
answer into ``Seen`` records plus the cursor to store once they are in the stream. The sync runner
does the I/O and decides, against the stream's last known state, which sightings are events.
Every cursor carries ``phase``: ``backfill`` until the first full read is done, then ``live``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.providers.base import Call, Target, parse_time

Cursor = dict[str, Any]
MAX_ID = 256  # the width of the store's upstream_id columns


class CaptureError(Exception):
    """An upstream page that cannot be read (garbage, a missing field): the sync keeps its cursor."""


@dataclass(frozen=True)
class Seen:
    """One record as a page shows it; ``data`` None means the upstream reports it deleted."""

    upstream_id: str
    data: dict[str, Any] | None
    upstream_updated_at: datetime | None = None


@dataclass(frozen=True)
class Page:
    """What one answer said: the records, the cursor after them, and where the reading stands.

    ``caught_up``: nothing more to read now (wait ``poll_interval``). ``scan_complete``: this page
    ended a full scan (Airtable), so a known record the scan did not show is a delete.
    """

    seen: list[Seen]
    cursor: Cursor
    caught_up: bool = False
    scan_complete: bool = False
    backfilled: int = 0  # records read by the backfill on this page (progress)


class Capture(ABC):
    """How one provider's collections are read; subclasses hold no state."""

    @abstractmethod
    def start(self, now: datetime) -> Cursor:
        """The cursor of a fresh backfill begun at ``now`` (the gateway's clock)."""

    @abstractmethod
    def request(self, cursor: Cursor, target: Target) -> Call:
        """The next page's call."""

    @abstractmethod
    def page(self, cursor: Cursor, body: Any) -> Page:
        """Read a 2xx answer to ``request(cursor)``; ``CaptureError`` when it makes no sense."""

    def scan_start(self, cursor: Cursor) -> bool:
        """Whether ``request(cursor)`` begins a full scan, whose complete set of ids reveals deletes."""
        return False

    def recover(self, cursor: Cursor, status: int, body: Any) -> Cursor | None:
        """A cursor to retry with after a refusal that only means "start over" (an expired iterator)."""
        return None


def live(cursor: Cursor) -> bool:
    return cursor.get("phase") == "live"


def rows(body: Any, key: str) -> list[dict[str, Any]]:
    """``body[key]`` as a list of objects, or ``CaptureError``."""
    found = body.get(key) if isinstance(body, dict) else None
    if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
        raise CaptureError(f"the answer has no list of {key!r}")
    return found


def text(row: dict[str, Any], key: str) -> str:
    """An id (of a record, an event, a page): kept in the store as it is, so one it cannot hold (a NUL,
    which PostgreSQL's text refuses, or longer than its column) fails the page with a sentence saying
    so instead of the store's own error; changed, it would name another record."""
    value = row.get(key)
    if value is None or isinstance(value, (dict, list)) or value == "":
        raise CaptureError(f"a record has no {key!r}")
    found = str(value)
    if "\x00" in found or len(found) > MAX_ID:
        raise CaptureError(f"a record has an {key!r} the gateway cannot store (a NUL, or over {MAX_ID} characters)")
    return found


def stamp(row: dict[str, Any], key: str) -> datetime:
    value = parse_time(row.get(key))
    if value is None:
        raise CaptureError(f"a record has no valid {key!r}")
    return value


def millis(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def from_millis(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


@dataclass
class Ties:
    """Keyset position on (time, id): the last instant read and the ids already read at it.

    Several records can share one instant across a page boundary; re-reading from that instant
    inclusive and skipping the ids already read there loses none and repeats none.
    """

    since: Any
    ids: set[str] = field(default_factory=set)

    def fresh(self, at: Any, upstream_id: str) -> bool:
        return not (at == self.since and upstream_id in self.ids)

    def advance(self, at: Any, upstream_id: str) -> None:
        if at != self.since:
            self.since, self.ids = at, set()
        self.ids.add(upstream_id)
