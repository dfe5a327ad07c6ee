"""Salesforce change capture: SOQL on ``SystemModstamp`` through ``queryAll``.

``SELECT FIELDS(ALL) FROM <Object> WHERE SystemModstamp >= <cursor> ORDER BY SystemModstamp, Id
LIMIT 200`` (``FIELDS(ALL)`` requires ``LIMIT 200``), following ``nextRecordsUrl`` while ``done`` is
false. ``queryAll`` also answers deleted rows (``IsDeleted = true``): those are the deletes. The
backfill reads through ``queryAll`` too: a record deleted while the backfill runs gets a newer
``SystemModstamp`` than the records read before, and a record changed after it moves the cursor
past it, so a backfill through ``query`` (live rows only) would never see that delete.

Several records can share one ``SystemModstamp`` across a page boundary: ``>=`` plus skipping the ids
already read at the cursor instant loses none. If 200 records share the instant, the next query pages
through them by ``Id`` (``SystemModstamp = t AND Id > last``) so it progresses.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from gateway.providers.base import Call, Target, checked, option, parse_time
from gateway.providers.capture.base import Capture, CaptureError, Cursor, Page, Seen, Ties, rows, stamp, text
from gateway.providers.salesforce import DEFAULT_API_VERSION, sobject_type

LIMIT = 200
_ID = re.compile(r"[A-Za-z0-9]{15,18}")


def soql_time(value: datetime) -> str:
    """A SOQL dateTime literal in UTC: ``YYYY-MM-DDThh:mm:ssZ`` as the SOQL reference spells it.

    Salesforce stores whole seconds (its answers say ``.000``), so its own instants take the documented
    form; milliseconds are only written for an instant that has them, which then needs them to be exact.
    """
    whole = value.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}Z" if value.microsecond < 1000 else f"{whole}.{value.microsecond // 1000:03d}Z"


class SalesforceCapture(Capture):
    def start(self, now: datetime) -> Cursor:
        return {"phase": "backfill", "since": None, "ids": [], "after": None, "next": None, "count": 0, "from": None}

    def request(self, cursor: Cursor, target: Target) -> Call:
        if cursor.get("next"):
            return Call("GET", str(cursor["next"]))
        version = option(target, "api_version", DEFAULT_API_VERSION)
        sobject = sobject_type(checked(target.obj, r"[A-Za-z]\w*", field="collection_id"))
        return Call("GET", f"/services/data/{version}/queryAll", query=[("q", self.soql(sobject, cursor))])

    def soql(self, sobject: str, cursor: Cursor) -> str:
        """The query; every value in it is re-checked here (the cursor round-trips through the store)."""
        where = ""
        parsed = parse_time(cursor.get("since"))
        since = soql_time(parsed) if parsed else None
        after = cursor.get("after")
        if since and isinstance(after, str) and _ID.fullmatch(after):
            where = f" WHERE SystemModstamp > {since} OR (SystemModstamp = {since} AND Id > '{after}')"
        elif since:
            where = f" WHERE SystemModstamp >= {since}"
        return f"SELECT FIELDS(ALL) FROM {sobject}{where} ORDER BY SystemModstamp, Id LIMIT {LIMIT}"  # noqa: S608

    def page(self, cursor: Cursor, body: Any) -> Page:
        records = rows(body, "records")
        since = parse_time(cursor.get("since"))
        ties = Ties(since, set(cursor.get("ids") or []))
        seen = []
        for row in records:
            upstream_id, at = text(row, "Id"), stamp(row, "SystemModstamp")
            if not _ID.fullmatch(upstream_id):
                raise CaptureError("a record has a malformed 'Id'")
            if ties.fresh(at, upstream_id):
                seen.append(_seen(row, upstream_id))
            ties.advance(at, upstream_id)
        query_from = cursor.get("from") if cursor.get("next") else cursor.get("since")
        count = (int(cursor.get("count") or 0) if cursor.get("next") else 0) + len(records)
        after_stamp = soql_time(ties.since) if ties.since is not None else None
        state: Cursor = {**cursor, "since": after_stamp, "ids": sorted(ties.ids), "count": count, "from": query_from}
        backfilled = sum(1 for s in seen if s.data is not None) if cursor.get("phase") == "backfill" else 0
        next_url = body.get("nextRecordsUrl") if not body.get("done", True) else None
        if next_url:
            if not isinstance(next_url, str) or not next_url.startswith("/services/data/"):
                raise CaptureError("the answer has a malformed 'nextRecordsUrl'")
            return Page(seen, {**state, "next": next_url}, backfilled=backfilled)
        state["next"] = None
        if count >= LIMIT:  # a full query: read on from where it ended
            stuck = query_from == after_stamp and records
            state["after"] = str(records[-1]["Id"]) if stuck else None
            return Page(seen, state, backfilled=backfilled)
        state["after"] = None
        return Page(seen, {**state, "phase": "live"}, caught_up=True, backfilled=backfilled)


def _seen(row: dict[str, Any], upstream_id: str) -> Seen:
    updated = parse_time(row.get("LastModifiedDate"))
    if row.get("IsDeleted") is True:
        return Seen(upstream_id, None, updated)
    return Seen(upstream_id, {k: v for k, v in row.items() if k != "attributes"}, updated)
