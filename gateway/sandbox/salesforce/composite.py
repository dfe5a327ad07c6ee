"""Salesforce Composite stand-in: ``POST /services/data/vXX.X/composite``, one API call for many.

Subrequests run in order through the same handlers as direct requests (``routes.py``), so a
collection inside a Composite call validates and answers exactly as it would alone. Limits as
Salesforce documents them: at most 25 subrequests, at most 5 of them sObject Collections or query
operations (each collection still at most 200 records). With ``allOrNone: true`` the outer flag also
forces every collection subrequest to all-or-none, and the first failing subrequest rolls back
everything: the org is restored from a snapshot taken before the first subrequest, the failing one
keeps its own errors (with status 400), and every other subrequest reports ``PROCESSING_HALTED``.
Without it, each subrequest stands alone. ``collateSubrequests`` is accepted (order is kept either
way); ``@{reference}`` substitution between subrequests is not modelled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from gateway.sandbox.common import Reject, json_body
from gateway.sandbox.salesforce.routes import DATA, Sub, operation_for
from gateway.sandbox.salesforce.state import SALESFORCE, SalesforceState, sf_error

MAX_SUBREQUESTS = 25
MAX_COLLECTIONS = 5  # sObject Collections and query subrequests together
HALTED = {
    "errorCode": "PROCESSING_HALTED",
    "message": "The transaction was rolled back since another operation in the same transaction failed.",
}
_URL = re.compile(r"^/services/data/(?P<version>v\d+\.\d)(?P<path>/[^?]*)$")
_REFERENCE = re.compile(r"^[A-Za-z0-9_]{1,80}$")
_METHODS = frozenset({"GET", "POST", "PATCH", "PUT", "DELETE"})


@dataclass(frozen=True)
class Subrequest:
    method: str
    version: str
    path: str
    query: dict[str, str]
    body: Any
    reference_id: str

    @property
    def counts_as_collection(self) -> bool:
        return self.path.startswith(("/composite/sobjects", "/query"))


def _invalid(message: str) -> Reject:
    return Reject(sf_error(400, "INVALID_API_INPUT", message))


def _subrequest(raw: Any, seen: set[str]) -> Subrequest:
    """One ``compositeRequest`` entry, checked as Salesforce's deserializer does (whole call fails)."""
    if not isinstance(raw, dict):
        raise _invalid("compositeRequest: each subrequest must be a JSON object")
    method, url, reference = raw.get("method"), raw.get("url"), raw.get("referenceId")
    if not isinstance(method, str) or method.upper() not in _METHODS:
        raise _invalid(f"compositeRequest: method {method!r} is not supported")
    if not isinstance(reference, str) or not _REFERENCE.match(reference) or reference in seen:
        raise _invalid(f"compositeRequest: referenceId {reference!r} is missing, malformed or not unique")
    parts = urlsplit(url) if isinstance(url, str) else None
    found = _URL.match(parts.path) if parts else None
    if parts is None or found is None:
        raise _invalid(f"compositeRequest: url {url!r} must start with /services/data/vXX.X/")
    seen.add(reference)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return Subrequest(method.upper(), found["version"], found["path"], query, raw.get("body"), reference)


def _parse(body: Any) -> tuple[list[Subrequest], bool]:
    if not isinstance(body, dict):
        raise _invalid("The composite request body must be a JSON object")
    raw, all_or_none = body.get("compositeRequest"), body.get("allOrNone", False)
    if not isinstance(all_or_none, bool) or not isinstance(body.get("collateSubrequests", False), bool):
        raise Reject(sf_error(400, "JSON_PARSER_ERROR", "allOrNone and collateSubrequests must be booleans"))
    if not isinstance(raw, list) or not raw:
        raise _invalid("compositeRequest: must be a non-empty list of subrequests")
    if len(raw) > MAX_SUBREQUESTS:
        raise Reject(
            sf_error(400, "LIMIT_EXCEEDED", f"Composite requests may contain at most {MAX_SUBREQUESTS} subrequests")
        )
    seen: set[str] = set()
    subrequests = [_subrequest(entry, seen) for entry in raw]
    if sum(s.counts_as_collection for s in subrequests) > MAX_COLLECTIONS:
        raise Reject(
            sf_error(
                400,
                "LIMIT_EXCEEDED",
                f"Composite requests may contain at most {MAX_COLLECTIONS} sObject Collections or query subrequests",
            )
        )
    return subrequests, all_or_none


def _forced(sub: Subrequest) -> Subrequest:
    """The outer ``allOrNone`` overrides each collection subrequest's own flag."""
    if not sub.path.startswith("/composite/sobjects") or sub.method == "GET":
        return sub
    if sub.method == "DELETE":
        return replace(sub, query={**sub.query, "allOrNone": "true"})
    return replace(sub, body={**sub.body, "allOrNone": True}) if isinstance(sub.body, dict) else sub


def _run(state: SalesforceState, sub: Subrequest) -> tuple[int, Any]:
    """Answer one subrequest with the direct handler: (status, body)."""
    found = operation_for(sub.method, sub.path)
    if found is None:
        response = sf_error(404, "NOT_FOUND", "The requested resource does not exist")
    else:
        operation, match = found
        try:
            response = operation(state, Sub(sub.version, {"version": sub.version, **match}, sub.query, sub.body))
        except Reject as exc:
            response = exc.response
    raw = response.body
    return response.status, json.loads(raw) if isinstance(raw, bytes) and raw else None


def _failed(status: int, body: Any) -> bool:
    """A subrequest failed if its status says so or a collection answered with a refused record."""
    if status >= 400:
        return True
    return isinstance(body, list) and any(isinstance(r, dict) and r.get("success") is False for r in body)


def _entry(sub: Subrequest, status: int, body: Any) -> dict[str, Any]:
    return {"body": body, "httpHeaders": {}, "httpStatusCode": status, "referenceId": sub.reference_id}


class _Snapshot:
    """The org's rows, deleted ids and id serial, restorable in place after a rollback."""

    def __init__(self, state: SalesforceState) -> None:
        # Rows are changed only by ``dict.update`` and replaced whole, never mutated deeper, so a copy
        # of each row dict is exact and far cheaper than a deep copy of a large org.
        self.objects = {name: {i: dict(row) for i, row in rows.items()} for name, rows in state.objects.items()}
        self.deleted = dict(state.deleted)
        self.serial = state.serial

    def restore(self, state: SalesforceState) -> None:
        state.objects.clear()
        state.objects.update(self.objects)
        state.deleted.clear()
        state.deleted.update(self.deleted)
        state.serial = self.serial


def _execute(state: SalesforceState, subrequests: list[Subrequest], all_or_none: bool) -> list[dict[str, Any]]:
    if not all_or_none:
        return [_entry(sub, *_run(state, sub)) for sub in subrequests]
    snapshot = _Snapshot(state)
    answers = []
    for index, sub in enumerate(subrequests):
        status, body = _run(state, _forced(sub))
        if _failed(status, body):
            snapshot.restore(state)
            halted = [_entry(other, 400, [HALTED]) for other in subrequests]
            halted[index] = _entry(sub, max(status, 400), body)
            return halted
        answers.append(_entry(sub, status, body))
    return answers


async def composite(request: web.Request) -> web.Response:
    """``POST .../composite``: counted once by the shared middleware, however many subrequests."""
    state = request.app[SALESFORCE]
    body = await json_body(request, lambda m: sf_error(400, "JSON_PARSER_ERROR", m))
    subrequests, all_or_none = _parse(body)
    return web.json_response({"compositeResponse": _execute(state, subrequests, all_or_none)})


COMPOSITE_ROUTES = [web.post(DATA + "/composite", composite)]
