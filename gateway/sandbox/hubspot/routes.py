"""HubSpot sandbox handlers: ``/crm/v3/objects/{type}[/{id}]`` and ``.../batch/{create,update,read,archive}``.

Batches validate every input first: one invalid property fails the whole batch with 400 (nothing
written), as HubSpot does; ids that do not exist in update/read give 207 with ``OBJECT_NOT_FOUND``
errors beside the results for the ids that do.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.sandbox.common import Reject, json_body, now, utc_iso
from gateway.sandbox.hubspot.search import search
from gateway.sandbox.hubspot.state import (
    MAX_BATCH,
    HubSpotState,
    as_strings,
    context,
    hs_error,
    property_names,
    validation_errors,
    view,
)

OBJECTS = "/crm/v3/objects/{object_type}"


async def _body(request: web.Request) -> dict[str, Any]:
    body = await json_body(request, lambda m: hs_error(400, "VALIDATION_ERROR", f"Invalid input JSON: {m}"))
    if not isinstance(body, dict):
        raise Reject(hs_error(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object"))
    return body


def _invalid(errors: list[dict[str, Any]]) -> Reject:
    return Reject(
        hs_error(400, "VALIDATION_ERROR", "Property values were not valid: " + json.dumps(errors), errors=errors)
    )


def _checked(state: HubSpotState, object_type: str, properties: Any) -> dict[str, str]:
    errors = validation_errors(state, object_type, properties)
    if errors:
        raise _invalid(errors)
    return as_strings(properties)


def _missing(object_type: str, object_id: str) -> Reject:
    return Reject(hs_error(404, "OBJECT_NOT_FOUND", f"resource not found: {object_type} {object_id}"))


# --- single objects ------------------------------------------------------------------------------------


async def list_objects(request: web.Request) -> web.Response:
    """``GET /crm/v3/objects/{type}?limit=&after=&properties=[&archived=true]``: pages ordered by id."""
    state, object_type = context(request)
    try:
        limit = int(request.query.get("limit", "10"))
        after = int(request.query.get("after", "0"))
    except ValueError:
        raise Reject(hs_error(400, "VALIDATION_ERROR", "limit and after must be integers")) from None
    if not 1 <= limit <= 100:
        raise Reject(hs_error(400, "VALIDATION_ERROR", "limit: must be between 1 and 100"))
    table = state.table(f"{object_type}:archived" if request.query.get("archived") == "true" else object_type)
    rows = sorted((o for o in table.values() if int(o["id"]) > after), key=lambda o: int(o["id"]))
    names = property_names(request.query.get("properties"))
    body: dict[str, Any] = {"results": [view(object_type, o, names) for o in rows[:limit]]}
    if len(rows) > limit:
        next_after = str(int(rows[limit - 1]["id"]))
        link = f"{state.base_url}{request.path}?after={next_after}&limit={limit}"
        body["paging"] = {"next": {"after": next_after, "link": link}}
    return web.json_response(body)


async def create_object(request: web.Request) -> web.Response:
    state, object_type = context(request)
    properties = _checked(state, object_type, (await _body(request)).get("properties"))
    return web.json_response(state.insert(object_type, properties), status=201)


async def get_object(request: web.Request) -> web.Response:
    state, object_type = context(request)
    obj = state.table(object_type).get(request.match_info["id"])
    if obj is None:
        raise _missing(object_type, request.match_info["id"])
    return web.json_response(view(object_type, obj, property_names(request.query.get("properties"))))


async def update_object(request: web.Request) -> web.Response:
    state, object_type = context(request)
    object_id = request.match_info["id"]
    if object_id not in state.table(object_type):
        raise _missing(object_type, object_id)
    properties = _checked(state, object_type, (await _body(request)).get("properties"))
    return web.json_response(state.update(object_type, object_id, properties))


async def archive_object(request: web.Request) -> web.Response:
    state, object_type = context(request)
    state.archive(object_type, request.match_info["id"])
    return web.Response(status=204)


# --- batches -------------------------------------------------------------------------------------------


async def _inputs(request: web.Request) -> list[dict[str, Any]]:
    inputs = (await _body(request)).get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise Reject(hs_error(400, "VALIDATION_ERROR", "inputs: must be a list of objects"))
    if len(inputs) > MAX_BATCH:
        raise Reject(
            hs_error(
                400,
                "VALIDATION_ERROR",
                f"Batch input limit exceeded: {len(inputs)} > {MAX_BATCH}",
                errors=[{"message": f"inputs: size must be at most {MAX_BATCH}", "code": "TOO_MANY_INPUTS"}],
            )
        )
    return inputs


def _batch(results: list[dict[str, Any]], missing: list[str], object_type: str, started: str) -> web.Response:
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": utc_iso(now()),
    }
    if not missing:
        return web.json_response(body)
    body["numErrors"] = 1
    body["errors"] = [
        {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "context": {"ids": missing},
            "message": f"Could not get some {object_type.upper()} objects, they may be deleted or not "
            "exist. Check that ids are valid.",
        }
    ]
    return web.json_response(body, status=207)


async def batch_create(request: web.Request) -> web.Response:
    state, object_type = context(request)
    started = utc_iso(now())
    inputs = await _inputs(request)
    checked = [_checked(state, object_type, i.get("properties")) for i in inputs]
    results = [state.insert(object_type, properties) for properties in checked]
    response = _batch(results, [], object_type, started)
    response.set_status(201)
    return response


async def batch_update(request: web.Request) -> web.Response:
    state, object_type = context(request)
    started, table = utc_iso(now()), state.table(object_type)
    inputs = await _inputs(request)
    checked = [(str(i.get("id", "")), _checked(state, object_type, i.get("properties"))) for i in inputs]
    missing = [object_id for object_id, _ in checked if object_id not in table]
    results = [state.update(object_type, oid, props) for oid, props in checked if oid in table]
    return _batch(results, missing, object_type, started)


async def batch_read(request: web.Request) -> web.Response:
    state, object_type = context(request)
    started, table = utc_iso(now()), state.table(object_type)
    body = await _body(request)
    inputs = await _inputs(request)
    names = property_names(body.get("properties"))
    ids = [str(i.get("id", "")) for i in inputs]
    results = [view(object_type, table[i], names) for i in ids if i in table]
    return _batch(results, [i for i in ids if i not in table], object_type, started)


async def batch_archive(request: web.Request) -> web.Response:
    state, object_type = context(request)
    for item in await _inputs(request):
        state.archive(object_type, str(item.get("id", "")))
    return web.Response(status=204)


ROUTES = [
    web.get(OBJECTS, list_objects),
    web.post(OBJECTS + "/search", search),
    web.post(OBJECTS, create_object),
    web.post(OBJECTS + "/batch/create", batch_create),
    web.post(OBJECTS + "/batch/update", batch_update),
    web.post(OBJECTS + "/batch/read", batch_read),
    web.post(OBJECTS + "/batch/archive", batch_archive),
    web.get(OBJECTS + "/{id}", get_object),
    web.patch(OBJECTS + "/{id}", update_object),
    web.delete(OBJECTS + "/{id}", archive_object),
]
