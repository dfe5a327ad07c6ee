"""Unknown creates settled by change capture: the records a sync read upstream answer for them.

A create cut off by a crash on a provider that cannot be asked whether it applied it (HubSpot,
Salesforce, Airtable) is left ``unknown`` by recovery. The sync reading that collection sees the
created records like any change made upstream and appends them itself (one ``insert`` each); this
module only finds them in the stream and settles the journal row, in the capture's transaction, so
the record reaches the stream exactly once and the Idempotency-Key gets its answer.

A record answers for a create's item when it is live in the stream, was first appended no earlier
than ``MARGIN`` seconds before the journal row was opened (and, where the upstream gives one, last
modified no earlier than that either), and holds every field the create sent with the same value
(compared as text: HubSpot answers every property as a string). Each record answers for one item at
most, in request order. Items before the row's ``progress`` were appended by the run itself.

When: after each page that appended something, a row all of whose items were found is settled
(200). After a round that read every change and began after the row turned ``unknown`` (so after
any write the dead replica sent), the row is settled with what was found: 200 if everything, else
``mutation_interrupted`` listing the records found (the rest were never applied).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.domain.models import Record
from gateway.mutations.journal import Entry, resolve_unknown, unknown_creates
from gateway.providers.base import Item
from gateway.stream.events import last_known, live_records

MARGIN = 30.0  # s of clock skew between the gateway and the upstream (as the HubSpot capture allows)


async def settle_unknown_creates(
    conn: AsyncConnection, sync_id: str, collection_id: str, *, complete_since: datetime | None = None
) -> int:
    """Settle what capture found in ``conn``'s transaction; how many journal rows were settled.

    ``complete_since``: the start of a round that just read every change (None after a single page).
    """
    settled = 0
    taken: set[str] = set()
    for entry in await unknown_creates(conn, sync_id, collection_id):
        candidates = [r for r in await _candidates(conn, entry) if r.upstream_id not in taken]
        found = _match(entry.items[entry.progress :], candidates)
        complete = complete_since is not None and complete_since.timestamp() > entry.updated_at
        if len(found) < len(entry.items) - entry.progress and not complete:
            continue
        known = await last_known(conn, sync_id, collection_id, entry.applied)
        applied = [known[i] for i in entry.applied if i in known]
        await resolve_unknown(conn, entry, applied + found)
        taken.update(r.upstream_id for r in found)
        settled += 1
    return settled


async def _candidates(conn: AsyncConnection, entry: Entry) -> list[Record]:
    """Live records of the collection first appended (and modified) since the row was opened, less the margin."""
    since = datetime.fromtimestamp(entry.created_at - MARGIN, UTC)
    return [
        record
        for record in await live_records(conn, entry.sync_id, entry.collection_id)
        if record.upstream_id not in entry.applied
        and record.inserted_at >= since
        and (record.upstream_updated_at is None or record.upstream_updated_at >= since)
    ]


def _match(items: Sequence[Item], candidates: Sequence[Record]) -> list[Record]:
    """For each item in order, the first unused candidate holding every field it sent."""
    used: set[str] = set()
    found = []
    for item in items:
        for record in candidates:
            if record.upstream_id not in used and _holds(record.data, item.data):
                used.add(record.upstream_id)
                found.append(record)
                break
    return found


def _holds(data: Mapping[str, Any], sent: Mapping[str, Any]) -> bool:
    return all(key in data and _text(data[key]) == _text(value) for key, value in sent.items())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
