"""HubSpot change capture: the object list (backfill), CRM search (changes), archived lists (deletes).

The backfill pages ``GET /crm/v3/objects/{type}?limit=100&after=`` (ordered by id, so records
changed meanwhile cannot shift a page); changes then come from ``POST .../search`` filtered on the
last-modified property GT the cursor (``lastmodifieddate`` for contacts, ``hs_lastmodifieddate`` for
every other object type, as HubSpot names them), sorted ascending, 100 per page, starting from the backfill's
start less ``SKEW`` (the gateway's clock against HubSpot's). Each search starts again at the last
instant read (the filter value is that instant less 1 ms) and skips the ids already read at it;
if 100 records share the instant the search pages through them with ``after``. When a search is
caught up, ``GET .../{type}?archived=true`` is paged through: a known record listed there is a delete.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.providers.base import Call, Target, parse_time
from gateway.providers.capture.base import Capture, CaptureError, Cursor, Page, Seen, Ties, millis, rows, stamp, text
from gateway.providers.hubspot import object_type

LIMIT = 100
SKEW = 30.0  # seconds: changes made this long before the backfill began are read again once
# HubSpot's contacts predate the ``hs_`` prefix: their last-modified property has none.
_CONTACTS_MODIFIED = "lastmodifieddate"
_MODIFIED = "hs_lastmodifieddate"


def modified_property(object_type: str) -> str:
    """The property holding a record's last-modified instant, for ``object_type`` (``contacts``, ...)."""
    return _CONTACTS_MODIFIED if object_type in ("contacts", "0-1") else _MODIFIED


def _next_after(body: dict[str, Any]) -> str | None:
    paging = body.get("paging")
    after = paging.get("next", {}).get("after") if isinstance(paging, dict) else None
    if after is not None and not isinstance(after, (str, int)):
        raise CaptureError("the answer has a malformed 'paging.next.after'")
    return None if after is None else str(after)


def _properties(row: dict[str, Any]) -> dict[str, Any]:
    properties = row.get("properties")
    if not isinstance(properties, dict):
        raise CaptureError("a record has no 'properties' object")
    return dict(properties)


class HubSpotCapture(Capture):
    def start(self, now: datetime) -> Cursor:
        return {"phase": "backfill", "after": None, "since": millis(now) - int(SKEW * 1000)}

    def request(self, cursor: Cursor, target: Target) -> Call:
        kind = object_type(target.obj)
        path = f"/crm/v3/objects/{kind}"
        after = [("after", str(cursor["after"]))] if cursor.get("after") else []
        if cursor.get("phase") == "backfill":
            return Call("GET", path, query=[("limit", str(LIMIT)), *after])
        if cursor.get("step") == "archived":
            return Call("GET", path, query=[("archived", "true"), ("limit", str(LIMIT)), *after])
        modified = modified_property(kind)
        body: dict[str, Any] = {
            "filterGroups": [
                {"filters": [{"propertyName": modified, "operator": "GT", "value": str(cursor["since"] - 1)}]}
            ],
            "sorts": [{"propertyName": modified, "direction": "ASCENDING"}],
            "limit": LIMIT,
        }
        if cursor.get("after"):
            body["after"] = str(cursor["after"])
        return Call("POST", path + "/search", json=body)

    def page(self, cursor: Cursor, body: Any) -> Page:
        results = rows(body, "results")
        after = _next_after(body)
        if cursor.get("phase") == "backfill":
            seen = [Seen(text(r, "id"), _properties(r), parse_time(r.get("updatedAt"))) for r in results]
            if after:
                return Page(seen, {**cursor, "after": after}, backfilled=len(seen))
            live = {"phase": "live", "step": "search", "since": cursor["since"], "ids": [], "after": None}
            return Page(seen, live, backfilled=len(seen))
        if cursor.get("step") == "archived":
            seen = [Seen(text(r, "id"), None, parse_time(r.get("updatedAt"))) for r in results]
            if after:
                return Page(seen, {**cursor, "after": after})
            return Page(seen, {**cursor, "step": "search", "after": None}, caught_up=True)
        return self._search_page(cursor, results, after)

    def _search_page(self, cursor: Cursor, results: list[dict[str, Any]], after: str | None) -> Page:
        query_from = int(cursor["since"])
        ties = Ties(query_from, set(cursor.get("ids") or []))
        seen = []
        for row in results:
            upstream_id = text(row, "id")
            properties = _properties(row)
            at = millis(stamp(properties, _MODIFIED if properties.get(_MODIFIED) else _CONTACTS_MODIFIED))
            if ties.fresh(at, upstream_id):
                seen.append(Seen(upstream_id, properties, parse_time(row.get("updatedAt"))))
            ties.advance(at, upstream_id)
        state = {**cursor, "since": ties.since, "ids": sorted(ties.ids), "after": None}
        if len(results) >= LIMIT and after:
            if ties.since == query_from:  # a page of one instant: page on through it
                state["after"] = after
            return Page(seen, state)
        return Page(seen, {**state, "step": "archived"})
