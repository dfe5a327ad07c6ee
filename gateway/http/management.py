"""Management API (scope ``admin``): credentials, syncs and consumers; secrets are write-only.

The three resources behave alike (list, create, get, patch, delete), so one ``Resource`` describes
each and builds its views and OpenAPI entries; its ``Crud`` names the ``Objects`` methods it calls.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from gateway.domain.models import (
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
from gateway.egress import ca_bundle_path
from gateway.errors import InvalidRequest, validate
from gateway.http import appkeys
from gateway.http.bodies import json_response, read_json
from gateway.http.endpoints import Endpoint, Handler
from gateway.http.openapi import openapi_view
from gateway.pacing.limits import check_credential
from gateway.store.objects import Objects

ADMIN_ERRORS = {400: "invalid request", 401: "missing or bad token", 403: "token lacks the scope", 404: "not found"}
Enrich = Callable[[web.Request, Any], Awaitable[Any]]
Check = Callable[[web.Request, Any, str | None], Awaitable[None]]


def object_id(request: web.Request, key: str = "id") -> str:
    """The path's object id (or token name), refused with 400 naming ``key`` unless it is a valid id."""
    value = request.match_info[key]
    if not re.match(ID_PATTERN, value):
        raise InvalidRequest(f"{key}: {value[:140]!r} does not match {ID_PATTERN}", field=key)
    return value


async def _body(request: web.Request) -> Any:
    return await read_json(request, limit=request.app[appkeys.CONFIG].server.max_json_bytes)


async def _with_pacing_state(request: web.Request, view: CredentialView) -> CredentialView:
    """A credential's read view carries its bucket's live state when the pacer can describe it."""
    describe = request.app.get(appkeys.PACING_STATE)
    if describe is None:
        return view
    credential = await request.app[appkeys.OBJECTS].credential(view.id)
    return view.model_copy(update={"pacing": await describe(credential)})


async def _check_credential(request: web.Request, body: CredentialIn | CredentialPatch, target: str | None) -> None:
    """``ca_bundle`` inside ``upstream.ca_dir``; a provider of the catalog; limits that can grant every cost."""
    config = request.app[appkeys.LIVE_CONFIG].current  # a reload may have added providers or changed limits
    if body.ca_bundle:
        ca_bundle_path(body.ca_bundle, config.upstream.ca_dir)
    provider = getattr(body, "provider", None)
    if provider is None and body.rate_limit is not None and target is not None:
        provider = (await request.app[appkeys.OBJECTS].credential(target)).provider
    if provider is not None:
        check_credential(config, provider, body.rate_limit)


@dataclass(frozen=True)
class Crud:
    """The ``Objects`` methods behind one resource's five views."""

    list_all: Callable[[Objects], Awaitable[Sequence[BaseModel]]]
    create: Callable[[Objects, Any], Awaitable[BaseModel]]
    view: Callable[[Objects, str], Awaitable[BaseModel]]
    patch: Callable[[Objects, str, Any], Awaitable[BaseModel]]
    delete: Callable[[Objects, str], Awaitable[None]]


@dataclass(frozen=True)
class Resource:
    plural: str
    singular: str
    create_model: Any  # a model or an annotated union (consumers are discriminated by kind)
    patch_model: type[BaseModel]
    view_model: Any  # a model or an annotated union (consumers read back in the shape of their kind)
    crud: Crud
    enrich: Enrich | None = None
    check: Check | None = None  # rules that need the config, after the model's own validation

    async def list_all(self, request: web.Request) -> web.Response:
        return json_response({"data": await self.crud.list_all(request.app[appkeys.OBJECTS])})

    async def create(self, request: web.Request) -> web.Response:
        body = validate(TypeAdapter[Any](self.create_model), await _body(request))
        if self.check:
            await self.check(request, body, None)
        return json_response(await self.crud.create(request.app[appkeys.OBJECTS], body), status=201)

    async def get(self, request: web.Request) -> web.Response:
        view = await self.crud.view(request.app[appkeys.OBJECTS], object_id(request))
        return json_response(await self.enrich(request, view) if self.enrich else view)

    async def patch(self, request: web.Request) -> web.Response:
        target = object_id(request)
        patch = validate(self.patch_model, await _body(request))
        if self.check:
            await self.check(request, patch, target)
        return json_response(await self.crud.patch(request.app[appkeys.OBJECTS], target, patch))

    async def delete(self, request: web.Request) -> web.Response:
        await self.crud.delete(request.app[appkeys.OBJECTS], object_id(request))
        return web.Response(status=204)

    def endpoints(self) -> list[Endpoint]:
        base, item, noun = f"/v1/{self.plural}", f"/v1/{self.plural}/{{id}}", self.singular
        listing = dict[str, list[self.view_model]]  # type: ignore[name-defined]
        rows: list[tuple[str, str, Handler, str, dict[str, Any]]] = [
            ("GET", base, self.list_all, f"List {self.plural}", {"response": listing}),
            (
                "POST",
                base,
                self.create,
                f"Create a {noun}",
                {
                    "request": self.create_model,
                    "response": self.view_model,
                    "statuses": {409: "id already exists"},
                    "success": 201,
                },
            ),
            ("GET", item, self.get, f"Get a {noun}", {"response": self.view_model}),
            ("PATCH", item, self.patch, f"Change a {noun}", {"request": self.patch_model, "response": self.view_model}),
            ("DELETE", item, self.delete, f"Delete a {noun}", {"statuses": {409: "still in use"}, "success": 204}),
        ]
        return [
            Endpoint(
                method,
                path,
                handler,
                f"management.{self.plural}.{handler.__name__}",
                summary,
                "admin",
                request=extra.get("request"),
                response=extra.get("response"),
                statuses={**ADMIN_ERRORS, **extra.get("statuses", {})},
                success=extra.get("success", 200),
            )
            for method, path, handler, summary, extra in rows
        ]


RESOURCES = (
    Resource(
        "credentials",
        "credential",
        CredentialIn,
        CredentialPatch,
        CredentialView,
        Crud(
            Objects.list_credentials,
            Objects.create_credential,
            Objects.credential_view,
            Objects.patch_credential,
            Objects.delete_credential,
        ),
        _with_pacing_state,
        _check_credential,
    ),
    Resource(
        "syncs",
        "sync",
        SyncIn,
        SyncPatch,
        SyncView,
        Crud(Objects.list_syncs, Objects.create_sync, Objects.sync_view, Objects.patch_sync, Objects.delete_sync),
    ),
    Resource(
        "consumers",
        "consumer",
        ConsumerIn,
        ConsumerPatch,
        ConsumerView,
        Crud(
            Objects.list_consumers,
            Objects.create_consumer,
            Objects.consumer_view,
            Objects.patch_consumer,
            Objects.delete_consumer,
        ),
    ),
)

ENDPOINTS: list[Endpoint] = [
    *(endpoint for resource in RESOURCES for endpoint in resource.endpoints()),
    Endpoint("GET", "/v1/openapi.json", openapi_view, "other.openapi", "This OpenAPI document", None),
]
