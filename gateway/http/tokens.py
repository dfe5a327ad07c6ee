"""API tokens over HTTP (scope ``admin``): create (the secret is shown once), list, show, revoke.

Tokens are named, not numbered, so the name is the path parameter; reads never carry the secret,
which the store keeps only as a hash.
"""

from __future__ import annotations

from aiohttp import web

from gateway.domain.models import TokenCreated, TokenIn, TokenView
from gateway.errors import validate
from gateway.http import appkeys
from gateway.http.bodies import json_response, read_json
from gateway.http.endpoints import Endpoint
from gateway.http.management import ADMIN_ERRORS, object_id


def _name(request: web.Request) -> str:
    return object_id(request, "name")


async def create_token(request: web.Request) -> web.Response:
    body = await read_json(request, limit=request.app[appkeys.CONFIG].server.max_json_bytes)
    spec = validate(TokenIn, body, what="token")
    return json_response(await request.app[appkeys.TOKENS].issue(spec), status=201)


async def list_tokens(request: web.Request) -> web.Response:
    return json_response({"data": await request.app[appkeys.TOKENS].list()})


async def get_token(request: web.Request) -> web.Response:
    return json_response(await request.app[appkeys.TOKENS].view(_name(request)))


async def revoke_token(request: web.Request) -> web.Response:
    await request.app[appkeys.TOKENS].revoke(_name(request))
    return web.Response(status=204)


_BASE, _ITEM = "/v1/tokens", "/v1/tokens/{name}"
ENDPOINTS = [
    Endpoint(
        "POST",
        _BASE,
        create_token,
        "management.tokens.create",
        "Create an API token (its value is in this answer only)",
        "admin",
        request=TokenIn,
        response=TokenCreated,
        statuses={**ADMIN_ERRORS, 409: "a token with this name exists"},
        success=201,
    ),
    Endpoint(
        "GET",
        _BASE,
        list_tokens,
        "management.tokens.list",
        "List API tokens (never their values)",
        "admin",
        response=dict[str, list[TokenView]],
        statuses=ADMIN_ERRORS,
    ),
    Endpoint(
        "GET",
        _ITEM,
        get_token,
        "management.tokens.get",
        "Get an API token",
        "admin",
        response=TokenView,
        statuses=ADMIN_ERRORS,
    ),
    Endpoint(
        "DELETE",
        _ITEM,
        revoke_token,
        "management.tokens.revoke",
        "Revoke an API token",
        "admin",
        statuses=ADMIN_ERRORS,
        success=204,
    ),
]
