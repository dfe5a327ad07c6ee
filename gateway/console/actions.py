"""The console's forms: sign-in, sign-out, token create and revoke, sync pause, resume and backfill.

Every post is CSRF-checked (``auth.form``; the sign-in form by its double-submit cookie) and answers
with a redirect (303, so a reload never posts twice) except token creation, whose answer is the one
place the new token is ever shown; that page is ``no-store`` like every console page.
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy
from pydantic import ValidationError

from gateway.console.auth import (
    COOKIE,
    SESSION_ID,
    SIGNIN_COOKIE,
    form,
    read_form,
    secure_headers,
    set_cookie,
    signin_csrf,
)
from gateway.console.keys import SESSIONS, services
from gateway.console.views import tokens_page
from gateway.domain.models import TokenIn
from gateway.errors import GatewayError, InvalidRequest, RateLimited, describe_validation_error

SIGNIN_COOKIE_AGE = 3600


def _signin_page(request: web.Request, *, error: str | None = None, status: int = 200) -> web.Response:
    csrf = signin_csrf(request)
    response = aiohttp_jinja2.render_template("signin.html", request, {"csrf": csrf, "error": error}, status=status)
    set_cookie(request, response, SIGNIN_COOKIE, csrf, SIGNIN_COOKIE_AGE)
    secure_headers(response)
    return response


async def signin_form(request: web.Request) -> web.StreamResponse:
    return _signin_page(request)


async def signin(request: web.Request) -> web.StreamResponse:
    """Exchange an admin token (posted, never in a URL) for a session cookie.

    Bad tokens count in the API's per-address backoff (one table for both), so the form is no way
    around it: a paused address gets 429 with ``Retry-After``, good token or not, as from the API.
    """
    try:
        data = await read_form(request)
    except InvalidRequest as exc:
        return _signin_page(request, error=exc.message, status=exc.status)
    sent, expected = data.get("csrf"), request.cookies.get(SIGNIN_COOKIE, "")
    if not isinstance(sent, str) or not expected or not hmac.compare_digest(sent, expected):
        return _signin_page(request, error="The form expired; please sign in again.", status=403)
    backoff, address = services(request).backoff, services(request).client_address(request)
    try:
        backoff.check(address)
    except RateLimited as exc:
        headers = exc.headers()
        error = f"Too many bad tokens from this address: try again in {headers['Retry-After']} s."
        response = _signin_page(request, error=error, status=exc.status)
        response.headers.update(headers)
        return response
    posted = data.get("token")
    token = posted.strip() if isinstance(posted, str) else ""
    principal = await services(request).tokens.authenticate(token) if token else None
    if principal is None:
        backoff.failed(address)
    else:
        backoff.succeeded(address)
    if principal is None or not principal.has_scope("admin"):
        return _signin_page(request, error="That is not a valid admin token.", status=401)
    ttl = services(request).config.console.session_ttl
    session_id = await request.app[SESSIONS].open(token, ttl=ttl)
    response = web.HTTPSeeOther("/console")
    set_cookie(request, response, COOKIE, session_id, ttl)
    response.del_cookie(SIGNIN_COOKIE, path="/console")
    secure_headers(response)
    return response


@form
async def signout(request: web.Request) -> web.StreamResponse:
    await request.app[SESSIONS].close(request[SESSION_ID])
    response = web.HTTPSeeOther("/console/signin")
    response.del_cookie(COOKIE, path="/console")
    return response


@form
async def create_token(request: web.Request) -> web.StreamResponse:
    """The token API's model and service with the form's fields; a refusal is shown on the page."""
    data = await read_form(request)
    try:
        spec = token_spec(token_fields(data))
        token = await services(request).tokens.create(spec)
    except GatewayError as exc:
        return await tokens_page(request, error=exc.message, status=exc.status)
    return await tokens_page(request, created=token)


def token_spec(fields: dict[str, Any]) -> TokenIn:
    """The token API's model; a refusal names the field as ``POST /v1/tokens`` would."""
    try:
        return TokenIn.model_validate(fields)
    except ValidationError as exc:
        names = [".".join(str(p) for p in e["loc"]) for e in exc.errors(include_url=False)]
        raise InvalidRequest(describe_validation_error(exc, prefix="token"), fields=names) from None


def token_fields(data: MultiDictProxy[str | bytes | bytearray | FileField]) -> dict[str, Any]:
    """The form as ``POST /v1/tokens`` would take it: lists from checkboxes and commas, days to a date."""
    fields: dict[str, Any] = {
        "name": str(data.get("name", "")).strip(),
        "scopes": [str(v) for v in data.getall("scopes", [])],
        "priority": str(data.get("priority", "normal")),
    }
    weight = str(data.get("weight", "")).strip() or "1"
    # ASCII digits only: "²" is a digit to str.isdigit() but not to int(); the model names a bad one
    fields["weight"] = int(weight) if re.fullmatch(r"[0-9]{1,9}", weight) else weight
    only = [part.strip() for part in str(data.get("only", "")).split(",") if part.strip()]
    if only:
        fields["only"] = only
    days = str(data.get("expires_days", "")).strip()
    if days:
        try:
            fields["expires_at"] = (datetime.now(UTC) + timedelta(days=float(days))).isoformat()
        except (ValueError, OverflowError):
            raise InvalidRequest("expires_days: must be a number of days", field="expires_days") from None
    return fields


@form
async def revoke_token(request: web.Request) -> web.StreamResponse:
    await services(request).tokens.revoke(request.match_info["name"])
    return web.HTTPSeeOther("/console/tokens")


@form
async def sync_action(request: web.Request) -> web.StreamResponse:
    """``POST /v1/syncs/{id}/pause|resume|backfill`` from a button: the same calls (the route names the action)."""
    syncs = services(request).syncs
    control = {"pause": syncs.pause, "resume": syncs.resume, "backfill": syncs.backfill}[request.match_info["action"]]
    await control(request.match_info["id"])
    return web.HTTPSeeOther("/console/syncs")
