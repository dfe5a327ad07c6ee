"""Which sightings become events against the last known state."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.domain.models import Record
from gateway.providers.capture.base import Seen
from gateway.syncs.reconcile import changes, missing

T1 = datetime(2026, 1, 1, tzinfo=UTC)
T2 = datetime(2026, 1, 2, tzinfo=UTC)


def record(data: dict[str, str], at: datetime | None, *, deleted: bool = False) -> Record:
    return Record(
        sync_id="s",
        collection_id="c",
        upstream_id="r1",
        upstream_updated_at=at,
        data=data,
        deleted=deleted,
        inserted_at=T1,
        updated_at=T1,
    )


def actions(seen: list[Seen], known: dict[str, Record]) -> list[str]:
    return [c.action for c in changes(seen, known)]


def test_new_changed_deleted_and_repeats() -> None:
    assert actions([Seen("r1", {"a": "1"}, T1)], {}) == ["insert"]
    known = {"r1": record({"a": "1"}, T1)}
    assert actions([Seen("r1", {"a": "1", "b": "extra"}, T1)], known) == []  # what a mutation wrote, read again
    assert actions([Seen("r1", {"a": "2"}, T1)], known) == ["update"]
    assert actions([Seen("r1", {"a": "1"}, T2)], known) == ["update"]
    assert actions([Seen("r1", {"a": "0"}, datetime(2025, 1, 1, tzinfo=UTC))], known) == []  # stale
    assert actions([Seen("r1", None)], known) == ["delete"]
    assert actions([Seen("r1", None)], {}) == []
    assert actions([Seen("r1", {"a": "1"}, T2)], {"r1": record({"a": "1"}, T1, deleted=True)}) == ["insert"]


def test_without_times_only_equal_data_is_unchanged() -> None:
    known = {"r1": record({"a": "1", "b": "2"}, None)}
    assert actions([Seen("r1", {"a": "1", "b": "2"})], known) == []
    assert actions([Seen("r1", {"a": "1"})], known) == ["update"]  # Airtable leaves a cleared cell out


def test_a_page_that_shows_a_record_twice_diffs_against_itself() -> None:
    seen = [Seen("r1", {"a": "1"}), Seen("r1", {"a": "2"}), Seen("r1", None), Seen("r1", None)]
    assert actions(seen, {}) == ["insert", "update", "delete"]
    assert [s.upstream_id for s in missing(["a", "b"], ["a", "b", "c"])] == ["c"]
