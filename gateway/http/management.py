"""Management API (scope ``admin``): credentials, syncs and consumers; secrets are write-only."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter

from gateway.errors import InvalidRequest
from gateway.http import appkeys
from gateway.http.bodies import json_response, read_json, validate
from gateway.http.openapi import Endpoint, openapi_view
from gateway.models import (
    ID_PATTERN,
    ConsumerIn,
    ConsumerPatch,
    ConsumerView,
    CredentialIn,
    CredentialPatch,
    CredentialView,
    SyncIn,
    SyncPatch,
    SyncView,
)

_CONSUMER_IN = TypeAdapter[Any](ConsumerIn)
_ERRORS = {400: "invalid request", 401: "missing or bad token", 403: "token lacks the scope", 404: "not found"}


def object_id(request: web.Request) -> str:
    value = request.match_info["id"]
    if not re.match(ID_PATTERN, value):
        raise InvalidRequest(f"id: {value[:140]!r} does not match {ID_PATTERN}", field="id")
    return value


async def _body(request: web.Request) -> Any:
    return await read_json(request, limit=request.app[appkeys.CONFIG].server.max_json_bytes)


# --- credentials -------------------------------------------------------------------------------------


async def list_credentials(request: web.Request) -> web.Response:
    return json_response({"data": await request.app[appkeys.OBJECTS].list_credentials()})


async def create_credential(request: web.Request) -> web.Response:
    body = validate(CredentialIn, await _body(request))
    return json_response(await request.app[appkeys.OBJECTS].create_credential(body), status=201)


async def get_credential(request: web.Request) -> web.Response:
    view = await request.app[appkeys.OBJECTS].credential_view(object_id(request))
    describe = request.app.get(appkeys.PACING_STATE)
    if describe is not None:
        view = view.model_copy(update={"pacing": await describe(view.id)})
    return json_response(view)


async def patch_credential(request: web.Request) -> web.Response:
    credential_id = object_id(request)
    patch = validate(CredentialPatch, await _body(request))
    return json_response(await request.app[appkeys.OBJECTS].patch_credential(credential_id, patch))


async def delete_credential(request: web.Request) -> web.Response:
    await request.app[appkeys.OBJECTS].delete_credential(object_id(request))
    return web.Response(status=204)


# --- syncs -------------------------------------------------------------------------------------------


async def list_syncs(request: web.Request) -> web.Response:
    return json_response({"data": await request.app[appkeys.OBJECTS].list_syncs()})


async def create_sync(request: web.Request) -> web.Response:
    body = validate(SyncIn, await _body(request))
    return json_response(await request.app[appkeys.OBJECTS].create_sync(body), status=201)


async def get_sync(request: web.Request) -> web.Response:
    return json_response(await request.app[appkeys.OBJECTS].sync_view(object_id(request)))


async def patch_sync(request: web.Request) -> web.Response:
    sync_id = object_id(request)
    patch = validate(SyncPatch, await _body(request))
    return json_response(await request.app[appkeys.OBJECTS].patch_sync(sync_id, patch))


async def delete_sync(request: web.Request) -> web.Response:
    await request.app[appkeys.OBJECTS].delete_sync(object_id(request))
    return web.Response(status=204)


# --- consumers ---------------------------------------------------------------------------------------


async def list_consumers(request: web.Request) -> web.Response:
    return json_response({"data": await request.app[appkeys.OBJECTS].list_consumers()})


async def create_consumer(request: web.Request) -> web.Response:
    body = validate(_CONSUMER_IN, await _body(request))
    return json_response(await request.app[appkeys.OBJECTS].create_consumer(body), status=201)


async def get_consumer(request: web.Request) -> web.Response:
    return json_response(await request.app[appkeys.OBJECTS].consumer_view(object_id(request)))


async def patch_consumer(request: web.Request) -> web.Response:
    consumer_id = object_id(request)
    patch = validate(ConsumerPatch, await _body(request))
    return json_response(await request.app[appkeys.OBJECTS].patch_consumer(consumer_id, patch))


async def delete_consumer(request: web.Request) -> web.Response:
    await request.app[appkeys.OBJECTS].delete_consumer(object_id(request))
    return web.Response(status=204)


def _crud(noun: str, views: tuple[Any, ...], models: tuple[Any, Any, Any]) -> list[Endpoint]:
    list_view, create_view, get_view, patch_view, delete_view = views
    body_in, patch_in, out = models
    base, item = f"/v1/{noun}", f"/v1/{noun}/{{id}}"
    return [
        Endpoint(
            "GET",
            base,
            list_view,
            f"management.{noun}.list",
            f"List {noun}",
            "admin",
            response=dict[str, list[out]],  # type: ignore[valid-type]
            statuses=_ERRORS,
        ),
        Endpoint(
            "POST",
            base,
            create_view,
            f"management.{noun}.create",
            f"Create a {noun[:-1]}",
            "admin",
            request=body_in,
            response=out,
            statuses={**_ERRORS, 409: "id already exists"},
        ),
        Endpoint(
            "GET",
            item,
            get_view,
            f"management.{noun}.get",
            f"Get a {noun[:-1]}",
            "admin",
            response=out,
            statuses=_ERRORS,
        ),
        Endpoint(
            "PATCH",
            item,
            patch_view,
            f"management.{noun}.patch",
            f"Change a {noun[:-1]}",
            "admin",
            request=patch_in,
            response=out,
            statuses=_ERRORS,
        ),
        Endpoint(
            "DELETE",
            item,
            delete_view,
            f"management.{noun}.delete",
            f"Delete a {noun[:-1]}",
            "admin",
            statuses={**_ERRORS, 409: "still in use"},
        ),
    ]


ENDPOINTS: list[Endpoint] = [
    *_crud(
        "credentials",
        (list_credentials, create_credential, get_credential, patch_credential, delete_credential),
        (CredentialIn, CredentialPatch, CredentialView),
    ),
    *_crud("syncs", (list_syncs, create_sync, get_sync, patch_sync, delete_sync), (SyncIn, SyncPatch, SyncView)),
    *_crud(
        "consumers",
        (list_consumers, create_consumer, get_consumer, patch_consumer, delete_consumer),
        (ConsumerIn, ConsumerPatch, ConsumerView),
    ),
    Endpoint("GET", "/v1/openapi.json", openapi_view, "other.openapi", "This OpenAPI document", None),
]
