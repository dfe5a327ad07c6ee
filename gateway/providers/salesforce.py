"""Salesforce: sObject Collections, 200 records a call with ``allOrNone``, then a read-back.

``salesforce:contact`` writes the ``Contact`` sObject under ``/services/data/<api_version>`` (sync
option ``api_version``, default ``v59.0``). Collections answer 200 with one SaveResult per record even
when they refuse the batch, so the per-record errors are read from the body; with ``allOrNone`` a
refusal means nothing of that call was applied. Writes return ids only, so the full records are read
back with ``GET .../composite/sobjects/<Type>?ids=...&fields=...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.providers.base import (
    Call,
    Item,
    Kind,
    Target,
    Translator,
    UpstreamRecord,
    Written,
    checked,
    option,
    parse_time,
)

DEFAULT_API_VERSION = "v59.0"
_ROLLED_BACK = "ALL_OR_NONE_OPERATION_ROLLED_BACK"
_NOT_FOUND_CODES = frozenset({"NOT_FOUND", "ENTITY_IS_DELETED"})
_MISSING_ID = "INVALID_CROSS_REFERENCE_KEY"  # a missing record when no field is named, else a bad lookup value
_ALWAYS_READ = ("Id", "LastModifiedDate")


def sobject_type(obj: str) -> str:
    """``contact`` -> ``Contact``, ``opportunity_line_item`` -> ``OpportunityLineItem``; custom ``x__c`` kept."""
    if "__" in obj:
        return obj
    return "".join(part[:1].upper() + part[1:] for part in obj.split("_"))


class Salesforce(Translator):
    name = "Salesforce"
    read_only = frozenset(
        {
            "attributes",
            "Id",
            "IsDeleted",
            "CreatedDate",
            "CreatedById",
            "LastModifiedDate",
            "LastModifiedById",
            "SystemModstamp",
            "LastActivityDate",
            "LastViewedDate",
            "LastReferencedDate",
        }
    )

    def chunk_size(self, kind: Kind) -> int:
        return 200

    def _base(self, target: Target) -> str:
        return "/services/data/" + option(target, "api_version", r"v\d{2,3}\.\d", DEFAULT_API_VERSION)

    def _type(self, target: Target) -> str:
        return sobject_type(checked(target.obj, r"[A-Za-z]\w*", field="collection_id"))

    def write(self, kind: Kind, items: Sequence[Item], target: Target) -> Call:
        path = f"{self._base(target)}/composite/sobjects"
        if kind == "delete":
            ids = ",".join(str(item.upstream_id) for item in items)
            return Call("DELETE", path, query=[("ids", ids), ("allOrNone", "true")])
        sobject = self._type(target)
        records = []
        for item in items:
            record: dict[str, Any] = {"attributes": {"type": sobject}, **self.writable(item.data)}
            if kind == "update":
                record["id"] = item.upstream_id
            records.append(record)
        return Call("POST" if kind == "create" else "PATCH", path, json={"allOrNone": True, "records": records})

    def written(self, kind: Kind, items: Sequence[Item], body: Any) -> Written:
        results = body if isinstance(body, list) else []
        failed = [r for r in results if not (isinstance(r, dict) and r.get("success"))]
        if len(results) != len(items) or failed:
            return Written(ids=[], failure=self._refusal(failed or [{"message": "unexpected answer"}]))
        return Written(ids=[str(r["id"]) for r in results])

    def _refusal(self, failed: list[Any]) -> Any:
        errors = [e for r in failed for e in (r.get("errors") or [] if isinstance(r, dict) else [])]
        real = [e for e in errors if isinstance(e, dict) and e.get("statusCode") != _ROLLED_BACK] or errors
        first = real[0] if real else (failed[0] if isinstance(failed[0], dict) else {})
        message = str(first.get("message") or first.get("statusCode") or "refused")
        if _names_missing_record(first):
            return self.not_found(message)
        return self.validation_error(message)

    def fetch(self, ids: Sequence[str], fields: Sequence[str], target: Target) -> Call:
        names = [*_ALWAYS_READ, *sorted({f for f in fields if f not in _ALWAYS_READ and f != "attributes"})]
        path = f"{self._base(target)}/composite/sobjects/{self._type(target)}"
        return Call("GET", path, query=[("ids", ",".join(ids)), ("fields", ",".join(names))])

    def fetched(self, body: Any) -> list[UpstreamRecord]:
        rows = body if isinstance(body, list) else []
        return [
            UpstreamRecord(
                upstream_id=str(row["Id"]),
                data={k: v for k, v in row.items() if k != "attributes"},
                upstream_updated_at=parse_time(row.get("LastModifiedDate")),
            )
            for row in rows
            if isinstance(row, dict) and row.get("Id")
        ]

    def error_message(self, body: Any) -> str:
        entries = body if isinstance(body, list) else [body]
        for entry in entries:
            if isinstance(entry, dict) and entry.get("message"):
                return str(entry["message"])
        return body if isinstance(body, str) else ""

    def is_not_found(self, status: int, body: Any) -> bool:
        return status == 404 or bool(_codes(body) & _NOT_FOUND_CODES)

    def is_throttled(self, status: int, body: Any) -> bool:
        return status == 429 or (status == 403 and "REQUEST_LIMIT_EXCEEDED" in _codes(body))


def _codes(body: Any) -> set[Any]:
    entries = body if isinstance(body, list) else [body]
    return {e.get("errorCode") for e in entries if isinstance(e, dict)}


def _names_missing_record(error: dict[str, Any]) -> bool:
    code = error.get("statusCode")
    return code in _NOT_FOUND_CODES or (code == _MISSING_ID and not error.get("fields"))
