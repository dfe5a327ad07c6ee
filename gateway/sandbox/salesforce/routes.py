"""Salesforce sandbox handlers: ``/services/data/vXX.X/sobjects/...`` and ``.../composite/sobjects``.

Each handler is a plain function of the org and a ``Sub`` (version, path parameters, query, parsed
body), so the same code answers a direct HTTP request and a Composite subrequest
(``composite.py``); ``OPERATIONS`` lists them once, for both routers.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.sandbox.common import Reject, json_body
from gateway.sandbox.salesforce.state import (
    MAX_COLLECTION,
    ROLLED_BACK,
    SALESFORCE,
    SalesforceState,
    check_fields,
    field_list,
    id_18,
    row_view,
    sf_error,
    sobject_name,
    validate,
)

DATA = r"/services/data/{version:v\d+\.\d}"


@dataclass(frozen=True)
class Sub:
    """One request as a handler sees it, whether it came over HTTP or inside a Composite call."""

    version: str
    match: Mapping[str, str]
    query: Mapping[str, str]
    body: Any = None


Operation = Callable[[SalesforceState, Sub], web.Response]


def _object_body(sub: Sub) -> dict[str, Any]:
    body = sub.body
    if not isinstance(body, dict):
        raise Reject(sf_error(400, "JSON_PARSER_ERROR", "Can not deserialize SObject out of a non-object token"))
    return body


def _fields_of(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "attributes"}


def _found(state: SalesforceState, sobject: str, record_id: str) -> dict[str, Any]:
    located = state.locate(record_id)
    if located is None or located[0] != sobject:
        raise Reject(sf_error(404, "NOT_FOUND", "The requested resource does not exist"))
    return located[1]


def _one_error(errors: list[dict[str, Any]]) -> web.Response:
    first = errors[0]
    return sf_error(400, first["statusCode"], first["message"], first["fields"])


# --- single rows ---------------------------------------------------------------------------------------


def describe_basic(state: SalesforceState, sub: Sub) -> web.Response:
    """``GET .../sobjects/{Type}``: the object's basic info and its most recent rows."""
    sobject = sobject_name(sub.match["sobject"])
    rows = list(state.table(sobject).values())[-5:]
    recent = [row_view(sobject, r, sub.version, ["Id"]) for r in reversed(rows)]
    return web.json_response(
        {
            "objectDescribe": {
                "name": sobject,
                "label": sobject,
                "createable": True,
                "updateable": True,
                "deletable": True,
            },
            "recentItems": recent,
        }
    )


def create_row(state: SalesforceState, sub: Sub) -> web.Response:
    sobject = sobject_name(sub.match["sobject"])
    fields = _fields_of(_object_body(sub))
    check_fields(sobject, fields)
    errors = validate(state, sobject, fields, creating=True)
    if errors:
        return _one_error(errors)
    row = state.insert(sobject, fields)
    return web.json_response({"id": row["Id"], "success": True, "errors": []}, status=201)


def get_row(state: SalesforceState, sub: Sub) -> web.Response:
    sobject = sobject_name(sub.match["sobject"])
    row = _found(state, sobject, sub.match["id"])
    return web.json_response(row_view(sobject, row, sub.version, field_list(sub.query, sobject)))


def update_row(state: SalesforceState, sub: Sub) -> web.Response:
    sobject = sobject_name(sub.match["sobject"])
    row = _found(state, sobject, sub.match["id"])
    fields = _fields_of(_object_body(sub))
    check_fields(sobject, fields)
    errors = validate(state, sobject, fields, creating=False)
    if errors:
        return _one_error(errors)
    state.update(sobject, row["Id"], fields)
    return web.Response(status=204)


def delete_row(state: SalesforceState, sub: Sub) -> web.Response:
    sobject = sobject_name(sub.match["sobject"])
    row = _found(state, sobject, sub.match["id"])
    state.delete(sobject, row["Id"])
    return web.Response(status=204)


# --- sObject Collections -------------------------------------------------------------------------------


def _collection_body(sub: Sub) -> tuple[list[dict[str, Any]], bool]:
    body = _object_body(sub)
    records, all_or_none = body.get("records"), body.get("allOrNone", False)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records) or not records:
        raise Reject(sf_error(400, "INVALID_FIELD", "records: must be a non-empty list of sObjects"))
    if len(records) > MAX_COLLECTION:
        raise Reject(
            sf_error(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION} records into this call",
            )
        )
    if not isinstance(all_or_none, bool):
        raise Reject(sf_error(400, "JSON_PARSER_ERROR", "allOrNone: must be a boolean"))
    return records, all_or_none


def _record_type(record: dict[str, Any]) -> str:
    attributes = record.get("attributes")
    raw = attributes.get("type") if isinstance(attributes, dict) else None
    if not isinstance(raw, str):
        raise Reject(sf_error(400, "INVALID_TYPE", "Must send a concrete entity type."))
    return sobject_name(raw)


def _outcomes(results: list[dict[str, Any]], all_or_none: bool) -> tuple[list[dict[str, Any]], bool]:
    """With ``allOrNone`` and any failure, every valid record is reported rolled back instead."""
    failed = any(not r["success"] for r in results)
    if not (all_or_none and failed):
        return results, True
    rolled = [
        r if not r["success"] else {**({"id": r["id"]} if "id" in r else {}), "success": False, "errors": [ROLLED_BACK]}
        for r in results
    ]
    return rolled, False


def _public(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]


def collection_create(state: SalesforceState, sub: Sub) -> web.Response:
    records, all_or_none = _collection_body(sub)
    typed = [(_record_type(r), _fields_of(r)) for r in records]
    for sobject, fields in typed:
        check_fields(sobject, fields)
    results: list[dict[str, Any]] = []
    for sobject, fields in typed:
        errors = validate(state, sobject, fields, creating=True)
        results.append({"success": not errors, "errors": errors, "_fields": (sobject, fields)})
    results, apply = _outcomes(results, all_or_none)
    for result in results:
        if apply and result["success"]:
            sobject, fields = result["_fields"]
            result["id"] = state.insert(sobject, fields)["Id"]
    return web.json_response([_ordered(r) for r in _public(results)])


def _ordered(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("id", "success", "errors") if k in result}


def collection_update(state: SalesforceState, sub: Sub) -> web.Response:
    records, all_or_none = _collection_body(sub)
    results: list[dict[str, Any]] = []
    for record in records:
        sobject, fields = _record_type(record), _fields_of(record)
        record_id = str(fields.pop("id", fields.pop("Id", "")))
        check_fields(sobject, fields)
        located = state.locate(record_id)
        if located is None or located[0] != sobject:
            errors = [state.missing_error(record_id)]
        else:
            errors = validate(state, sobject, fields, creating=False)
        results.append(
            {
                "id": id_18(record_id) if located else record_id,
                "success": not errors,
                "errors": errors,
                "_fields": (sobject, fields),
            }
        )
    results, apply = _outcomes(results, all_or_none)
    for result in results:
        if apply and result["success"]:
            sobject, fields = result["_fields"]
            state.update(sobject, result["id"], fields)
    return web.json_response([_ordered(r) for r in _public(results)])


def collection_delete(state: SalesforceState, sub: Sub) -> web.Response:
    ids = [i for i in sub.query.get("ids", "").split(",") if i]
    if not ids:
        raise Reject(sf_error(400, "MISSING_ARGUMENT", "ids: required parameter is missing"))
    if len(ids) > MAX_COLLECTION:
        raise Reject(sf_error(400, "EXCEEDED_ID_LIMIT", f"ids: cannot delete more than {MAX_COLLECTION} records"))
    all_or_none = sub.query.get("allOrNone", "false").lower() == "true"
    results: list[dict[str, Any]] = []
    for record_id in ids:
        located = state.locate(record_id)
        errors = [] if located else [state.missing_error(record_id)]
        results.append(
            {
                "id": id_18(record_id) if located else record_id,
                "success": not errors,
                "errors": errors,
                "_located": located,
            }
        )
    results, apply = _outcomes(results, all_or_none)
    for result in results:
        if apply and result["success"]:
            sobject, row = result["_located"]
            state.delete(sobject, row["Id"])
    return web.json_response([_ordered(r) for r in _public(results)])


def collection_retrieve(state: SalesforceState, sub: Sub) -> web.Response:
    """``GET .../composite/sobjects/{Type}?ids=&fields=``: rows in id order, null where missing."""
    sobject = sobject_name(sub.match["sobject"])
    ids = [i for i in sub.query.get("ids", "").split(",") if i]
    fields = field_list(sub.query, sobject)
    if not ids or fields is None:
        raise Reject(sf_error(400, "MISSING_ARGUMENT", "ids and fields are required parameters"))
    if len(ids) > 2000:
        raise Reject(sf_error(400, "EXCEEDED_ID_LIMIT", "ids: cannot retrieve more than 2000 records"))
    version = sub.version
    rows = []
    for record_id in ids:
        located = state.locate(record_id)
        rows.append(row_view(sobject, located[1], version, fields) if located and located[0] == sobject else None)
    return web.json_response(rows)


# (method, path under /services/data/vXX.X, handler): the one table both routers read.
OPERATIONS: list[tuple[str, str, Operation]] = [
    ("GET", "/sobjects/{sobject}", describe_basic),
    ("POST", "/sobjects/{sobject}", create_row),
    ("GET", "/sobjects/{sobject}/{id}", get_row),
    ("PATCH", "/sobjects/{sobject}/{id}", update_row),
    ("DELETE", "/sobjects/{sobject}/{id}", delete_row),
    ("POST", "/composite/sobjects", collection_create),
    ("PATCH", "/composite/sobjects", collection_update),
    ("DELETE", "/composite/sobjects", collection_delete),
    ("GET", "/composite/sobjects/{sobject}", collection_retrieve),
]
_PATTERNS = [
    (method, re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"), operation)
    for method, path, operation in OPERATIONS
]


def operation_for(method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
    """The handler and path parameters for ``path`` (relative to ``/services/data/vXX.X``), if any."""
    for wanted, pattern, operation in _PATTERNS:
        found = pattern.match(path)
        if found and wanted == method:
            return operation, found.groupdict()
    return None


def _handler(operation: Operation) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler around ``operation``: parse the JSON body of writes, build the ``Sub``."""

    async def handle(request: web.Request) -> web.Response:
        body = None
        if request.method in ("POST", "PATCH"):
            body = await json_body(request, lambda m: sf_error(400, "JSON_PARSER_ERROR", m))
        sub = Sub(request.match_info["version"], request.match_info, request.query, body)
        return operation(request.app[SALESFORCE], sub)

    return handle


ROUTES = [web.route(method, DATA + path, _handler(operation)) for method, path, operation in OPERATIONS]
