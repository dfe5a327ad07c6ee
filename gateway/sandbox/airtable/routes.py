"""Airtable sandbox handlers: list, get, create, update (PATCH/PUT) and delete records."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.sandbox.airtable.state import (
    AIRTABLE,
    MAX_WRITE,
    AirtableState,
    at_error,
    convert,
    view,
)
from gateway.sandbox.common import Reject, json_body, random_id

TABLE = "/v0/{base_id}/{table}"


def _context(request: web.Request) -> tuple[AirtableState, str, str, dict[str, str]]:
    state = request.app[AIRTABLE]
    base_id = request.match_info["base_id"]
    name, schema = state.resolve(base_id, request.match_info["table"])
    return state, base_id, name, schema


async def _body(request: web.Request) -> dict[str, Any]:
    body = await json_body(request, lambda m: at_error(422, "INVALID_REQUEST_UNKNOWN", f"Invalid request: {m}"))
    if not isinstance(body, dict):
        raise Reject(at_error(422, "INVALID_REQUEST_UNKNOWN", "Invalid request: the body must be a JSON object"))
    return body


def _record_list(body: dict[str, Any], verb: str) -> list[dict[str, Any]]:
    records = body.get("records")
    if not isinstance(records, list) or not records or not all(isinstance(r, dict) for r in records):
        raise Reject(at_error(422, "INVALID_RECORDS", "records: must be a non-empty list of objects"))
    if len(records) > MAX_WRITE:
        raise Reject(at_error(422, "INVALID_RECORDS", f"You may only {verb} up to {MAX_WRITE} records in one request"))
    return records


def _existing(state: AirtableState, base_id: str, name: str, record_id: str) -> dict[str, Any]:
    record = state.records(base_id, name).get(record_id)
    if record is None:
        raise Reject(at_error(404, "NOT_FOUND", f"Could not find record {record_id}"))
    return record


async def list_records(request: web.Request) -> web.Response:
    """``?pageSize=`` (<= 100) and ``offset=`` (the cursor a previous page returned)."""
    state, base_id, name, _ = _context(request)
    raw_size = request.query.get("pageSize", "100")
    if not raw_size.isdigit() or not 1 <= int(raw_size) <= 100:
        raise Reject(at_error(422, "INVALID_PAGE_SIZE", "pageSize: must be an integer between 1 and 100"))
    rows = list(state.records(base_id, name).values())
    start = 0
    if "offset" in request.query:
        cursor = request.query["offset"].rpartition("/")[2]
        ids = [r["id"] for r in rows]
        if cursor not in ids:
            raise Reject(at_error(422, "LIST_RECORDS_ITERATOR_NOT_AVAILABLE", "The offset is invalid or expired"))
        start = ids.index(cursor)
    end = start + int(raw_size)
    body: dict[str, Any] = {"records": [view(r) for r in rows[start:end]]}
    if end < len(rows):
        body["offset"] = f"itr{random_id('', 14)}/{rows[end]['id']}"
    return web.json_response(body)


async def get_record(request: web.Request) -> web.Response:
    state, base_id, name, _ = _context(request)
    return web.json_response(view(_existing(state, base_id, name, request.match_info["record_id"])))


async def create_records(request: web.Request) -> web.Response:
    """``{"records": [{"fields"}]}`` (up to 10) or a single ``{"fields"}``; ``typecast`` optional."""
    state, base_id, name, schema = _context(request)
    body = await _body(request)
    typecast = body.get("typecast") is True
    if "records" not in body:
        fields = convert(state, schema, body.get("fields"), typecast=typecast)
        return web.json_response(view(state.insert(base_id, name, fields)))
    records = _record_list(body, "create")
    converted = [convert(state, schema, r.get("fields"), typecast=typecast) for r in records]
    return web.json_response({"records": [view(state.insert(base_id, name, f)) for f in converted]})


def _apply(record: dict[str, Any], fields: dict[str, Any], *, destructive: bool) -> dict[str, Any]:
    record["fields"] = fields if destructive else {**record["fields"], **fields}
    return view(record)


async def update_records(request: web.Request) -> web.Response:
    """PATCH merges the given fields, PUT replaces them; all records are checked before any write."""
    state, base_id, name, schema = _context(request)
    body = await _body(request)
    records = _record_list(body, "update")
    typecast, destructive = body.get("typecast") is True, request.method == "PUT"
    planned = [
        (
            _existing(state, base_id, name, str(r.get("id", ""))),
            convert(state, schema, r.get("fields"), typecast=typecast),
        )
        for r in records
    ]
    return web.json_response({"records": [_apply(rec, f, destructive=destructive) for rec, f in planned]})


async def update_record(request: web.Request) -> web.Response:
    state, base_id, name, schema = _context(request)
    record = _existing(state, base_id, name, request.match_info["record_id"])
    body = await _body(request)
    fields = convert(state, schema, body.get("fields"), typecast=body.get("typecast") is True)
    return web.json_response(_apply(record, fields, destructive=request.method == "PUT"))


async def delete_records(request: web.Request) -> web.Response:
    """``DELETE ?records[]=recX&records[]=recY`` (up to 10); unknown ids fail the whole request."""
    state, base_id, name, _ = _context(request)
    ids = request.query.getall("records[]", [])
    if not ids or len(ids) > MAX_WRITE:
        raise Reject(at_error(422, "INVALID_RECORDS", f"records[]: give 1 to {MAX_WRITE} record ids"))
    for record_id in ids:
        _existing(state, base_id, name, record_id)
    table = state.records(base_id, name)
    for record_id in ids:
        table.pop(record_id, None)
    return web.json_response({"records": [{"id": i, "deleted": True} for i in ids]})


async def delete_record(request: web.Request) -> web.Response:
    state, base_id, name, _ = _context(request)
    record = _existing(state, base_id, name, request.match_info["record_id"])
    del state.records(base_id, name)[record["id"]]
    return web.json_response({"id": record["id"], "deleted": True})


ROUTES = [
    web.get(TABLE, list_records),
    web.post(TABLE, create_records),
    web.patch(TABLE, update_records),
    web.put(TABLE, update_records),
    web.delete(TABLE, delete_records),
    web.get(TABLE + "/{record_id}", get_record),
    web.patch(TABLE + "/{record_id}", update_record),
    web.put(TABLE + "/{record_id}", update_record),
    web.delete(TABLE + "/{record_id}", delete_record),
]
