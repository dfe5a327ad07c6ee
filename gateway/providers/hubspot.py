"""HubSpot CRM v3: batch create/update/archive, 100 records a call, then a batch read.

``hubspot:contact`` is the ``contacts`` object type; a record's ``data`` is its ``properties``. Batch
writes answer with the properties that were set, not the whole record, so the records are read back
through ``batch/read`` asking for the written properties plus those already known. A 207 answer
means part of the batch was applied: those records are kept and the first error is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.domain.models import DISPLAY_NAMES
from gateway.providers.base import Call, Item, Kind, Target, Translator, UpstreamRecord, Written, checked, parse_time

_PLURALS = {"company": "companies", "line_item": "line_items", "property": "properties"}


def object_type(obj: str) -> str:
    """``contact`` -> ``contacts``; already plural names and custom ids (``2-123456``, ``p_x``) stay."""
    name = checked(obj, r"[A-Za-z0-9_-]{1,100}", field="collection_id")
    if name in _PLURALS:
        return _PLURALS[name]
    if name.endswith("s") or not name[0].isalpha() or name.startswith("p_"):
        return name
    return name + "s"


class HubSpot(Translator):
    name = DISPLAY_NAMES["hubspot"]
    read_only = frozenset({"hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate"})

    def chunk_size(self, kind: Kind) -> int:
        return 100

    def write(self, kind: Kind, items: Sequence[Item], target: Target) -> Call:
        action = {"create": "create", "update": "update", "delete": "archive"}[kind]
        path = f"/crm/v3/objects/{object_type(target.obj)}/batch/{action}"
        inputs: list[dict[str, Any]]
        if kind == "create":
            inputs = [{"properties": self.writable(item.data)} for item in items]
        elif kind == "update":
            inputs = [{"id": item.upstream_id, "properties": self.writable(item.data)} for item in items]
        else:
            inputs = [{"id": item.upstream_id} for item in items]
        return Call("POST", path, json={"inputs": inputs})

    def written(self, kind: Kind, items: Sequence[Item], body: Any) -> Written:
        if kind == "delete":  # archive answers 204 with no body: every id was archived
            return Written(ids=[str(item.upstream_id) for item in items])
        answer = body if isinstance(body, dict) else {}
        results = [r for r in answer.get("results") or [] if isinstance(r, dict) and r.get("id") is not None]
        ids = [str(r["id"]) for r in results]
        errors = [e for e in answer.get("errors") or [] if isinstance(e, dict)]
        if not errors:
            return Written(ids=ids)
        message = str(errors[0].get("message") or "refused")
        failure = self.not_found(message) if errors[0].get("category") == "OBJECT_NOT_FOUND" else None
        return Written(ids=ids, failure=failure or self.validation_error(message))

    def fetch(self, ids: Sequence[str], fields: Sequence[str], target: Target) -> Call:
        path = f"/crm/v3/objects/{object_type(target.obj)}/batch/read"
        return Call("POST", path, json={"properties": sorted(set(fields)), "inputs": [{"id": i} for i in ids]})

    def fetched(self, body: Any) -> list[UpstreamRecord]:
        results = body.get("results") if isinstance(body, dict) else None
        return [
            UpstreamRecord(
                upstream_id=str(row["id"]),
                data=dict(row.get("properties") or {}),
                upstream_updated_at=parse_time(row.get("updatedAt")),
            )
            for row in results or []
            if isinstance(row, dict) and row.get("id") is not None
        ]

    def error_message(self, body: Any) -> str:
        if isinstance(body, dict):
            return str(body.get("message") or body.get("category") or "")
        return body if isinstance(body, str) else ""

    def is_not_found(self, status: int, body: Any) -> bool:
        return status == 404 or (isinstance(body, dict) and body.get("category") == "OBJECT_NOT_FOUND")
