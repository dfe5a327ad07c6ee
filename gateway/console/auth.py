"""Who may see the console: session cookies, CSRF tokens and the security headers of every page.

- The session cookie holds a random id (its hash is in the store, see ``store/sessions.py``):
  HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it), ``Secure`` when
  the request came over TLS or through a proxy that says so (``X-Forwarded-Proto: https``).
- CSRF: every form carries a token that is an HMAC of the session id, so it needs no storage and
  is worthless without the cookie; the sign-in form (no session yet) uses a double-submit cookie.
- Every answer carries a Content-Security-Policy without ``unsafe-inline``: scripts and styles come
  only from the console's own static files, so an injected ``<script>`` or ``style=`` does nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp.web_request import FileField
from multidict import MultiDictProxy

from gateway.console.keys import SESSIONS
from gateway.errors import GatewayError, InvalidRequest
from gateway.store.sessions import ConsoleSession

COOKIE = "gateway_console"
SIGNIN_COOKIE = "gateway_console_signin"
SIGNIN_PATH = "/console/signin"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
SESSION = web.RequestKey("console_session", ConsoleSession)
SESSION_ID = web.RequestKey("console_session_id", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def secure_headers(response: web.StreamResponse) -> None:
    response.headers.update(_HEADERS)


def csrf_token(session_id: str) -> str:
    """The form token of a session: an HMAC keyed by the session id, so only its holder can make it."""
    return hmac.new(session_id.encode(), b"gateway-console-csrf", hashlib.sha256).hexdigest()


def is_tls(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: float) -> None:
    response.set_cookie(
        name,
        value,
        max_age=int(max_age),
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=is_tls(request),
    )


def to_signin(request: web.Request) -> web.HTTPSeeOther:
    response = web.HTTPSeeOther(SIGNIN_PATH)
    secure_headers(response)
    return response


def signin_csrf(request: web.Request) -> str:
    """The double-submit value of the sign-in form: the cookie's, or a new one (set by the caller)."""
    return request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(32)


def page_context(request: web.Request) -> dict[str, Any]:
    """What every signed-in page needs: who is signed in, its forms' CSRF token, where it is (the nav)."""
    return {"signed_in_as": request[SESSION].token_name, "csrf": csrf_token(request[SESSION_ID]), "path": request.path}


def page(handler: Handler) -> Handler:
    """A console view: no valid session -> 303 to the sign-in page; otherwise the security headers."""

    @wraps(handler)
    async def view(request: web.Request) -> web.StreamResponse:
        session_id = request.cookies.get(COOKIE, "")
        session = await request.app[SESSIONS].check(session_id) if session_id else None
        if session is None:
            raise to_signin(request)
        request[SESSION] = session
        request[SESSION_ID] = session_id
        try:
            response = await handler(request)
        except GatewayError as exc:  # the API's message (never a secret), on a page instead of JSON
            context = {**page_context(request), "error": exc.message}
            response = aiohttp_jinja2.render_template("error.html", request, context, status=exc.status)
        if not response.prepared:
            secure_headers(response)
        return response

    return view


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | FileField]:
    """The posted form; a body that does not decode as UTF-8 is the client's mistake (400), not a crash."""
    try:
        return await request.post()
    except UnicodeDecodeError:
        raise InvalidRequest("form: the posted form is not UTF-8", field="form") from None


def form(handler: Handler) -> Handler:
    """A console form post: a session (as ``page``) AND the session's CSRF token, else 403."""

    @wraps(handler)
    async def post(request: web.Request) -> web.StreamResponse:
        data = await read_form(request)
        sent = data.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(sent, csrf_token(request[SESSION_ID])):
            response = web.Response(status=403, text="refused: the form's CSRF token is missing or wrong")
            secure_headers(response)
            return response
        return await handler(request)

    return page(post)
