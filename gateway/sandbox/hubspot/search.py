"""HubSpot sandbox CRM search: ``POST /crm/v3/objects/{type}/search`` and ``?archived=true`` lists.

Filters (``EQ NEQ LT LTE GT GTE``) inside ``filterGroups`` (groups are ORed, filters in a group
ANDed), ``sorts`` on one property, ``limit`` up to 200 and ``after`` as an offset into the results,
which stop at 10,000 as in HubSpot. Date properties compare as instants: values may be epoch
milliseconds or ISO-8601, as HubSpot accepts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway.sandbox.common import Reject, json_body
from gateway.sandbox.hubspot.state import PROPERTIES, context, hs_error, property_names, view

MAX_RESULTS = 10_000
DATES = frozenset({"createdate", "lastmodifieddate", "hs_lastmodifieddate"})
_OPERATORS = {
    "EQ": lambda a, b: a == b,
    "NEQ": lambda a, b: a != b,
    "LT": lambda a, b: a < b,
    "LTE": lambda a, b: a <= b,
    "GT": lambda a, b: a > b,
    "GTE": lambda a, b: a >= b,
}


def _bad(message: str) -> Reject:
    return Reject(hs_error(400, "VALIDATION_ERROR", message))


def _comparable(name: str, value: Any) -> Any:
    if name not in DATES or value in (None, ""):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise _bad(f"{text} is not a valid date for {name}") from None
    return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)


def _matches(obj: dict[str, Any], groups: list[Any]) -> bool:
    if not groups:
        return True
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list):
            raise _bad("filterGroups: each group needs a list of filters")
        if all(_passes(obj, f) for f in filters):
            return True
    return False


def _passes(obj: dict[str, Any], rule: Any) -> bool:
    if not isinstance(rule, dict) or rule.get("operator") not in _OPERATORS:
        raise _bad(f"filter: operator must be one of {', '.join(_OPERATORS)}")
    name = str(rule.get("propertyName"))
    mine, theirs = _comparable(name, obj["properties"].get(name)), _comparable(name, rule.get("value"))
    if mine is None or theirs is None:
        return bool(rule["operator"] == "NEQ" and mine != theirs)
    return bool(_OPERATORS[rule["operator"]](mine, theirs))


async def search(request: web.Request) -> web.Response:
    state, object_type = context(request)
    body = await json_body(request, lambda m: hs_error(400, "VALIDATION_ERROR", f"Invalid input JSON: {m}"))
    if not isinstance(body, dict):
        raise _bad("Invalid input JSON: expected an object")
    limit, offset = body.get("limit", 10), str(body.get("after", "0") or "0")
    if not isinstance(limit, int) or not 1 <= limit <= 200 or not offset.isdigit():
        raise _bad("limit must be 1 to 200 and after an offset")
    if int(offset) + limit > MAX_RESULTS:
        raise _bad(f"paging past {MAX_RESULTS} results is not supported")
    rows = [o for o in state.table(object_type).values() if _matches(o, body.get("filterGroups") or [])]
    rows.sort(key=lambda o: int(o["id"]))
    for sort in (body.get("sorts") or [])[:1]:
        name = sort.get("propertyName") if isinstance(sort, dict) else None
        if name not in PROPERTIES[object_type] and name not in DATES and name != "hs_object_id":
            raise _bad(f"sorts: unknown property {name}")
        descending = sort.get("direction") == "DESCENDING"
        rows.sort(key=lambda o: _comparable(str(name), o["properties"].get(name)) or 0, reverse=descending)
    start = int(offset)
    page = rows[start : start + limit]
    answer: dict[str, Any] = {
        "total": len(rows),
        "results": [view(object_type, o, property_names(body.get("properties"))) for o in page],
    }
    if start + limit < len(rows):
        answer["paging"] = {"next": {"after": str(start + limit)}}
    return web.json_response(answer)
