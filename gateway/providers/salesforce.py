"""Salesforce: sObject Collections of 200 records, several at once in one all-or-none Composite call.

``salesforce:contact`` writes the ``Contact`` sObject under ``/services/data/<api_version>`` (sync
option ``api_version``, default ``v59.0``). Up to 200 records go as one sObject Collections call with
``allOrNone``. More go as ONE ``POST .../composite`` with ``allOrNone: true`` and one collection
subrequest per 200 records: Salesforce allows 5 collection subrequests in a Composite call, so the
mutation maximum of 1,000 records is rolled back together, and a failing record anywhere leaves
nothing applied (the other subrequests answer ``PROCESSING_HALTED``). Collections answer 200 with one
SaveResult per record even when they refuse the batch, so per-record errors are read from the body.
Writes return ids only, so the full records are read back with ``GET .../composite/sobjects/<Type>
?ids=...&fields=...``, several of them in one (not all-or-none) Composite call past 200 ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

from gateway.domain.models import DISPLAY_NAMES
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
COLLECTION_SIZE = 200
MAX_COLLECTIONS = 5  # collection subrequests one Composite call may hold: 5 x 200 = the 1,000 maximum
_HALTED = "PROCESSING_HALTED"
_ROLLED_BACK = "ALL_OR_NONE_OPERATION_ROLLED_BACK"
_NOT_FOUND_CODES = frozenset({"NOT_FOUND", "ENTITY_IS_DELETED"})
_MISSING_ID = "INVALID_CROSS_REFERENCE_KEY"  # a missing record when no field is named, else a bad lookup value
_ALWAYS_READ = ("Id", "LastModifiedDate")
# Compound fields are read-only, their parts are written instead (the API's "Compound Fields" page):
# the standard addresses, any other compound (an object in the record: a geolocation), and the Name
# of a contact or lead (FirstName, LastName, ...). A record a sync read (FIELDS(ALL)) carries them.
_ADDRESSES = ("MailingAddress", "OtherAddress", "BillingAddress", "ShippingAddress", "Address")
_COMPOUND_NAME = frozenset({"Contact", "Lead"})


def sobject_type(obj: str) -> str:
    """``contact`` -> ``Contact``, ``opportunity_line_item`` -> ``OpportunityLineItem``; custom ``x__c`` kept."""
    if "__" in obj:
        return obj
    return "".join(part[:1].upper() + part[1:] for part in obj.split("_"))


class Salesforce(Translator):
    name = DISPLAY_NAMES["salesforce"]
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
            "MasterRecordId",
            "PhotoUrl",
            "LastCURequestDate",
            "LastCUUpdateDate",
            *_ADDRESSES,
        }
    )

    def chunk_size(self, kind: Kind) -> int:
        return COLLECTION_SIZE * MAX_COLLECTIONS

    def _base(self, target: Target) -> str:
        return "/services/data/" + option(target, "api_version", DEFAULT_API_VERSION)

    def _type(self, target: Target) -> str:
        return sobject_type(checked(target.obj, r"[A-Za-z]\w*", field="collection_id"))

    def write(self, kind: Kind, items: Sequence[Item], target: Target) -> Call:
        """One collection call for up to 200 records, else one all-or-none Composite call of them."""
        calls = [self._collection(kind, part, target) for part in _parts(items)]
        return calls[0] if len(calls) == 1 else self._composite(calls, target, all_or_none=True)

    def _collection(self, kind: Kind, items: Sequence[Item], target: Target) -> Call:
        path = f"{self._base(target)}/composite/sobjects"
        if kind == "delete":
            ids = ",".join(str(item.upstream_id) for item in items)
            return Call("DELETE", path, query=[("ids", ids), ("allOrNone", "true")])
        sobject = self._type(target)
        records = []
        for item in items:
            fields = {
                k: v
                for k, v in self.writable(item.data).items()
                if not isinstance(v, dict) and not (k == "Name" and sobject in _COMPOUND_NAME)
            }
            record: dict[str, Any] = {"attributes": {"type": sobject}, **fields}
            if kind == "update":
                record["id"] = item.upstream_id
            records.append(record)
        return Call("POST" if kind == "create" else "PATCH", path, json={"allOrNone": True, "records": records})

    def _composite(self, calls: Sequence[Call], target: Target, *, all_or_none: bool) -> Call:
        """``calls`` as subrequests of one Composite call, in order (``collateSubrequests`` off)."""
        subrequests = []
        for n, call in enumerate(calls):
            url = call.path + ("?" + urlencode(call.query, safe=",") if call.query else "")
            sub: dict[str, Any] = {"method": call.method, "url": url, "referenceId": f"chunk{n}"}
            if call.json is not None:
                sub["body"] = call.json
            subrequests.append(sub)
        body = {"allOrNone": all_or_none, "collateSubrequests": False, "compositeRequest": subrequests}
        return Call("POST", f"{self._base(target)}/composite", json=body)

    def written(self, kind: Kind, items: Sequence[Item], body: Any) -> Written:
        if isinstance(body, dict) and "compositeResponse" in body:
            return self._composite_written(items, body["compositeResponse"])
        return self._saved(items, body)

    def _saved(self, items: Sequence[Item], body: Any) -> Written:
        results = body if isinstance(body, list) else []
        failed = [r for r in results if not (isinstance(r, dict) and r.get("success"))]
        if len(results) != len(items) or failed:
            return Written(ids=[], failure=self._refusal(failed or [{"message": "unexpected answer"}]))
        return Written(ids=[str(r["id"]) for r in results])

    def _composite_written(self, items: Sequence[Item], answers: Any) -> Written:
        """The SaveResults of every subrequest in order; with allOrNone any failure means none applied."""
        entries = [a for a in answers if isinstance(a, dict)] if isinstance(answers, list) else []
        if entries and all(_ok(entry) for entry in entries):
            return self._saved(items, [r for entry in entries for r in _list(entry.get("body"))])
        return Written(ids=[], failure=self._composite_failure(entries))

    def _composite_failure(self, entries: list[dict[str, Any]]) -> Any:
        """The error that made the call fail, wherever it is among subrequests rolled back or halted.

        A refused record's SaveResult names it best; else a subrequest refused whole (an error list other
        than ``PROCESSING_HALTED``) maps through the error table like a direct answer would.
        """
        saves = [r for entry in entries for r in _list(entry.get("body")) if isinstance(r, dict) and "success" in r]
        failed = [r for r in saves if not r["success"]]
        if any(_real_error(r) for r in failed):
            return self._refusal(failed)
        for entry in entries:
            body, status = entry.get("body"), entry.get("httpStatusCode")
            if not _ok(entry) and _codes(body) - {_HALTED, None}:
                return self.error_for(status if isinstance(status, int) else 400, {}, body)
        if failed:
            return self._refusal(failed)
        return self.validation_error("the Composite request was halted without an error")

    def _refusal(self, failed: list[Any]) -> Any:
        errors = [e for r in failed for e in (r.get("errors") or [] if isinstance(r, dict) else [])]
        real = [e for e in errors if isinstance(e, dict) and e.get("statusCode") != _ROLLED_BACK] or errors
        first = real[0] if real else (failed[0] if isinstance(failed[0], dict) else {})
        message = str(first.get("message") or first.get("statusCode") or "refused")
        if _names_missing_record(first):
            return self.not_found(message)
        return self.validation_error(message)

    def fetch(self, ids: Sequence[str], fields: Sequence[str], target: Target) -> Call:
        """One retrieve per 200 ids (URLs stay short), batched in one Composite call when several."""
        names = [*_ALWAYS_READ, *sorted({f for f in fields if f not in _ALWAYS_READ and f != "attributes"})]
        path = f"{self._base(target)}/composite/sobjects/{self._type(target)}"
        calls = [
            Call("GET", path, query=[("ids", ",".join(ids[i : i + COLLECTION_SIZE])), ("fields", ",".join(names))])
            for i in range(0, len(ids), COLLECTION_SIZE)
        ]
        return calls[0] if len(calls) == 1 else self._composite(calls, target, all_or_none=False)

    def fetched(self, body: Any) -> list[UpstreamRecord]:
        if isinstance(body, dict) and "compositeResponse" in body:
            entries = [a for a in _list(body["compositeResponse"]) if isinstance(a, dict) and _ok(a)]
            body = [row for entry in entries for row in _list(entry.get("body"))]
        return [
            UpstreamRecord(
                upstream_id=str(row["Id"]),
                data={k: v for k, v in row.items() if k != "attributes"},
                upstream_updated_at=parse_time(row.get("LastModifiedDate")),
            )
            for row in _list(body)
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


def _parts(items: Sequence[Item]) -> list[Sequence[Item]]:
    return [items[i : i + COLLECTION_SIZE] for i in range(0, len(items), COLLECTION_SIZE)]


def _ok(entry: dict[str, Any]) -> bool:
    status = entry.get("httpStatusCode")
    return isinstance(status, int) and 200 <= status < 300


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _real_error(result: dict[str, Any]) -> bool:
    """Whether a refused SaveResult failed itself rather than being rolled back for another."""
    return any(isinstance(e, dict) and e.get("statusCode") != _ROLLED_BACK for e in _list(result.get("errors")))


def _codes(body: Any) -> set[Any]:
    entries = body if isinstance(body, list) else [body]
    return {e.get("errorCode") for e in entries if isinstance(e, dict)}


def _names_missing_record(error: dict[str, Any]) -> bool:
    code = error.get("statusCode")
    return code in _NOT_FOUND_CODES or (code == _MISSING_ID and not error.get("fields"))
