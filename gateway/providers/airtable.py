"""Airtable: create/update/delete 10 records a call; the answers already hold the full records.

``airtable:Contacts`` writes table ``Contacts`` (a name or ``tbl...`` id) of the base named by the
sync option ``base_id``. A record's ``data`` is its ``fields``. Updates use PATCH, so fields not sent
keep their values. Airtable records carry no modification time, so ``upstream_updated_at`` is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from gateway.domain.models import DISPLAY_NAMES
from gateway.providers.base import Call, Item, Kind, Target, Translator, UpstreamRecord, Written, option

_NOT_FOUND_TYPES = frozenset({"NOT_FOUND", "MODEL_ID_NOT_FOUND", "ROW_DOES_NOT_EXIST", "TABLE_NOT_FOUND"})


class Airtable(Translator):
    name = DISPLAY_NAMES["airtable"]

    def chunk_size(self, kind: Kind) -> int:
        return 10

    def _path(self, target: Target) -> str:
        base_id = option(target, "base_id")
        return f"/v0/{base_id}/{quote(target.obj, safe='')}"

    def write(self, kind: Kind, items: Sequence[Item], target: Target) -> Call:
        path = self._path(target)
        if kind == "delete":
            return Call("DELETE", path, query=[("records[]", str(item.upstream_id)) for item in items])
        if kind == "create":
            return Call("POST", path, json={"records": [{"fields": dict(item.data)} for item in items]})
        records = [{"id": item.upstream_id, "fields": dict(item.data)} for item in items]
        return Call("PATCH", path, json={"records": records})

    def written(self, kind: Kind, items: Sequence[Item], body: Any) -> Written:
        rows = body.get("records") if isinstance(body, dict) else None
        rows = [r for r in rows or [] if isinstance(r, dict) and r.get("id")]
        ids = [str(r["id"]) for r in rows]
        if kind == "delete":
            return Written(ids=ids)
        records = [UpstreamRecord(str(r["id"]), dict(r.get("fields") or {}), None) for r in rows]
        return Written(ids=ids, records=records)

    def reads(self, ids: Sequence[str], fields: Sequence[str], target: Target) -> list[Call]:
        """Airtable has no batch read: one ``GET .../{record id}`` per record."""
        path = self._path(target)
        return [Call("GET", f"{path}/{quote(record_id, safe='')}") for record_id in ids]

    def fetched(self, body: Any) -> list[UpstreamRecord]:
        row = body if isinstance(body, dict) and body.get("id") else None
        return [] if row is None else [UpstreamRecord(str(row["id"]), dict(row.get("fields") or {}), None)]

    def error_message(self, body: Any) -> str:
        error = body.get("error") if isinstance(body, dict) else body
        if isinstance(error, dict):
            return str(error.get("message") or error.get("type") or "")
        return error if isinstance(error, str) else ""

    def is_not_found(self, status: int, body: Any) -> bool:
        error = body.get("error") if isinstance(body, dict) else None
        kind = error.get("type") if isinstance(error, dict) else error
        return status == 404 or kind in _NOT_FOUND_TYPES
