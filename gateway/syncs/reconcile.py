"""Which sightings of a page are events: compare each with the stream's last known state.

A poll reads again what the gateway itself wrote (a mutation appended it already) and what an
earlier page showed; those must not become events a second time. A sighting is an event when the
record is new (``insert``; also a record seen again after a delete), when its ``upstream_updated_at``
or its data changed (``update``), or when the upstream reports a known record deleted (``delete``).
Where both sides carry a modification time, equal times and equal values of the fields both
hold mean "unchanged" (a mutation reads back only the fields it wrote), and an older sighting than
the known state is stale. Without a time (Stripe, Airtable) only equal data means unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.domain.models import Record
from gateway.providers.capture.base import Seen
from gateway.stream.events import RecordChange


@dataclass(frozen=True)
class Known:
    """The part of a stored record the comparison needs."""

    data: Mapping[str, Any]
    upstream_updated_at: datetime | None
    deleted: bool

    @classmethod
    def of(cls, record: Record) -> Known:
        return cls(record.data, record.upstream_updated_at, record.deleted)


def changes(seen: Sequence[Seen], known: Mapping[str, Record]) -> list[RecordChange]:
    """The events of ``seen`` (in page order) against ``known`` (by upstream id)."""
    state = {upstream_id: Known.of(record) for upstream_id, record in known.items()}
    out: list[RecordChange] = []
    for sighting in seen:
        change = _change(sighting, state.get(sighting.upstream_id))
        if change is None:
            continue
        out.append(change)
        state[sighting.upstream_id] = Known(change.data or {}, change.upstream_updated_at, change.action == "delete")
    return out


def missing(seen_ids: Iterable[str], known_ids: Iterable[str]) -> list[Seen]:
    """Deletes for a complete scan: known (live) records the scan did not show."""
    shown = set(seen_ids)
    return [Seen(upstream_id, None) for upstream_id in sorted(set(known_ids) - shown)]


def _change(sighting: Seen, previous: Known | None) -> RecordChange | None:
    upstream_id, at = sighting.upstream_id, sighting.upstream_updated_at
    if sighting.data is None:
        if previous is None or previous.deleted:
            return None  # never known, or already gone: nothing for consumers to remove
        return RecordChange(upstream_id, "delete", None, at)
    if previous is None or previous.deleted:
        return RecordChange(upstream_id, "insert", sighting.data, at)
    if _stale(previous, at) or _unchanged(previous, sighting):
        return None
    return RecordChange(upstream_id, "update", sighting.data, at)


def _stale(previous: Known, at: datetime | None) -> bool:
    return previous.upstream_updated_at is not None and at is not None and at < previous.upstream_updated_at


def _unchanged(previous: Known, sighting: Seen) -> bool:
    data = sighting.data or {}
    if previous.upstream_updated_at != sighting.upstream_updated_at:
        return False
    if sighting.upstream_updated_at is None:
        return dict(previous.data) == data
    return all(previous.data[key] == data[key] for key in previous.data.keys() & data.keys())
