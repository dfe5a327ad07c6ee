"""``GET /v1/providers`` and ``GET /v1/providers/{name}``: the provider catalog, for any valid token.

The catalog holds no secrets (limits, header names, cited pages), so any scope may read it: a
client can learn the limits its calls are paced to and how the upstream reports them.
"""

from __future__ import annotations

import re

from aiohttp import web

from gateway.catalog import view
from gateway.domain.catalog import ProviderView
from gateway.domain.models import PROVIDER_PATTERN
from gateway.errors import InvalidRequest, NotFound
from gateway.http import appkeys
from gateway.http.bodies import json_response
from gateway.http.endpoints import Endpoint

_ERRORS = {400: "invalid request", 401: "missing or bad token", 404: "not found"}


async def list_providers(request: web.Request) -> web.Response:
    catalog = request.app[appkeys.LIVE_CONFIG].current.catalog
    return json_response({"data": [view(entry).model_dump(mode="json") for entry in catalog.values()]})


async def get_provider(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if not re.fullmatch(PROVIDER_PATTERN, name):
        raise InvalidRequest(f"name: {name[:80]!r} does not match {PROVIDER_PATTERN}", field="name")
    entry = request.app[appkeys.LIVE_CONFIG].current.catalog.get(name)
    if entry is None:
        raise NotFound(f"provider {name!r} is not in the catalog")
    return json_response(view(entry))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/providers",
        list_providers,
        "other.providers.list",
        "List the provider catalog",
        None,
        response=dict[str, list[ProviderView]],
        statuses={401: _ERRORS[401]},
    ),
    Endpoint(
        "GET",
        "/v1/providers/{name}",
        get_provider,
        "other.providers.get",
        "Get one provider's catalog entry",
        None,
        response=ProviderView,
        statuses=_ERRORS,
    ),
]
