"""The console's security over plain HTTP: sessions, CSRF, cookie flags, revocation, CSP."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from sqlalchemy import select

from gateway.app import create_app
from gateway.http import appkeys
from gateway.store import tables as t
from tests.conftest import GatewayFactory, ServedLikeProduction, make_config
from tests.console.helpers import csrf_of, session_cookie, sign_in
from tests.support import poll
from tests.upstream.helpers import add_credential, add_sync

PAGES = [
    "/console",
    "/console/credentials/cred-1",
    "/console/calls",
    "/console/syncs",
    "/console/consumers",
    "/console/tokens",
    "/console/providers",
    "/console/events",
]
SYNC_FORMS = ["/console/syncs/sync-1/pause", "/console/syncs/sync-1/resume", "/console/syncs/sync-1/backfill"]
FORMS = ["/console/signout", "/console/tokens", "/console/tokens/admin/revoke", *SYNC_FORMS]


async def test_every_console_route_redirects_to_signin_without_a_session(make_gateway: GatewayFactory) -> None:
    """Pages, the live stream and form posts all answer 303 to the sign-in page without a session."""
    gw = await make_gateway()
    for path in PAGES:
        resp = await gw.client.get(path, allow_redirects=False)
        assert (resp.status, resp.headers.get("Location")) == (303, "/console/signin"), path
    for path in FORMS:
        resp = await gw.client.post(path, data={"csrf": "x", "name": "evil"}, allow_redirects=False)
        assert (resp.status, resp.headers.get("Location")) == (303, "/console/signin"), path
    assert [v.name for v in await gw.app[appkeys.TOKENS].list()] == ["admin"]


async def test_a_bearer_token_is_not_a_console_session(make_gateway: GatewayFactory) -> None:
    """The API's Authorization header does not open the console: only the session cookie does."""
    gw = await make_gateway()
    resp = await gw.client.get("/console", headers=gw.auth(), allow_redirects=False)
    assert resp.status == 303


async def test_every_form_post_refuses_without_the_csrf_token(make_gateway: GatewayFactory) -> None:
    """Signed in, a post without (or with a wrong) CSRF token is 403 and changes nothing."""
    gw = await make_gateway()
    await add_sync(gw, await add_credential(gw, "http://127.0.0.1:9"))
    await sign_in(gw.client, gw.admin_token)
    for path in FORMS:
        for form in ({"name": "evil"}, {"name": "evil", "csrf": "0" * 64}):
            resp = await gw.client.post(path, data=form, allow_redirects=False)
            assert resp.status == 403, path
    assert [v.name for v in await gw.app[appkeys.TOKENS].list()] == ["admin"]
    assert [(s.paused, s.generation) for s in await gw.app[appkeys.OBJECTS].all_syncs()] == [(False, 0)]
    assert (await gw.client.get("/console", allow_redirects=False)).status == 200  # not signed out


async def test_signin_refuses_without_its_csrf_cookie(make_gateway: GatewayFactory) -> None:
    """The sign-in form's token must match its cookie (login CSRF): a forged post opens no session."""
    gw = await make_gateway()
    resp = await gw.client.post(
        "/console/signin", data={"csrf": "forged", "token": gw.admin_token}, allow_redirects=False
    )
    assert resp.status == 403
    assert "gateway_console" not in resp.cookies


async def test_a_form_that_is_not_utf8_is_a_400_not_a_crash(make_gateway: GatewayFactory) -> None:
    """Raw bytes that do not decode (``%``-escapes are fine, ``\xff`` is not) get the form again with 400."""
    gw = await make_gateway()
    page = await gw.client.get("/console/signin")
    body = b"csrf=" + csrf_of(await page.text()).encode() + b"&token=\xff"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    resp = await gw.client.post("/console/signin", data=body, headers=headers, allow_redirects=False)
    assert resp.status == 400 and "not UTF-8" in await resp.text()
    assert "gateway_console" not in resp.cookies
    csrf = await sign_in(gw.client, gw.admin_token)
    body = b"csrf=" + csrf.encode() + b"&scopes=proxy&name=\xff"
    resp = await gw.client.post("/console/tokens", data=body, headers=headers)
    assert resp.status == 400 and "not UTF-8" in await resp.text()
    assert [v.name for v in await gw.app[appkeys.TOKENS].list()] == ["admin"]


async def test_non_admin_and_wrong_tokens_cannot_sign_in(make_gateway: GatewayFactory) -> None:
    """Only a valid token with the admin scope opens a session."""
    gw = await make_gateway()
    proxy_only = await gw.token("app", ["proxy"])
    for token in (proxy_only, "gw_not-a-token"):
        page = await gw.client.get("/console/signin")
        form = {"csrf": csrf_of(await page.text()), "token": token}
        resp = await gw.client.post("/console/signin", data=form, allow_redirects=False)
        assert resp.status == 401
        assert "not a valid admin token" in await resp.text()
    assert (await gw.client.get("/console", allow_redirects=False)).status == 303


async def test_bad_sign_ins_share_the_apis_bad_token_backoff(make_gateway: GatewayFactory) -> None:
    """Bad tokens posted to the sign-in form pause the address as bad bearer tokens do: 429 with
    Retry-After on the form and on the API, good token included; after the pause a good one signs in."""
    gw = await make_gateway(server={"auth_max_failures": 3, "auth_failure_window": 60, "auth_max_backoff": 30})

    async def post(token: str) -> tuple[int, str, str | None]:
        page = await gw.client.get("/console/signin")
        form = {"csrf": csrf_of(await page.text()), "token": token}
        resp = await gw.client.post("/console/signin", data=form, allow_redirects=False)
        return resp.status, await resp.text(), resp.headers.get("Retry-After")

    for _ in range(3):
        assert (await post("gw_guess"))[0] == 401
    status, html, retry_after = await post(gw.admin_token)
    assert (status, retry_after) == (429, "1") and "Too many bad tokens from this address" in html
    assert "gateway_console=" not in html and gw.admin_token not in html
    api = await gw.client.get("/v1/tokens", headers=gw.auth())
    assert api.status == 429 and api.headers["Retry-After"] == "1"  # one table: the API refuses too

    async def signed_in() -> bool:
        return (await post(gw.admin_token))[0] == 303

    await poll("a good token signs in after the pause", signed_in, deadline=20)
    assert (await gw.client.get("/console", allow_redirects=False)).status == 200
    assert (await gw.client.get("/v1/tokens", headers=gw.auth())).status == 200  # the success cleared it


async def test_session_cookie_flags(make_gateway: GatewayFactory) -> None:
    """HttpOnly, SameSite=Strict, expiring, scoped to /console; Secure only behind TLS."""
    gw = await make_gateway(console={"session_ttl": 600})
    for proto, secure in (("http", False), ("https", True)):
        page = await gw.client.get("/console/signin", headers={"X-Forwarded-Proto": proto})
        csrf = csrf_of(await page.text())
        headers = {"X-Forwarded-Proto": proto, "Cookie": f"gateway_console_signin={csrf}"}
        form = {"csrf": csrf, "token": gw.admin_token}
        resp = await gw.client.post("/console/signin", data=form, headers=headers, allow_redirects=False)
        assert resp.status == 303
        header = next(h for h in resp.headers.getall("Set-Cookie") if h.startswith("gateway_console="))
        assert "HttpOnly" in header and "SameSite=Strict" in header and "Path=/console" in header
        assert "Max-Age=600" in header
        assert ("Secure" in header) is secure, header


async def test_sessions_are_stored_hashed(make_gateway: GatewayFactory) -> None:
    """The store holds the SHA-256 of the session id and of the admin token, never either value."""
    gw = await make_gateway()
    await sign_in(gw.client, gw.admin_token)
    session = session_cookie(gw.client)
    async with gw.app[appkeys.ENGINE].connect() as conn:
        rows = (await conn.execute(select(t.console_sessions))).all()
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0])
    assert session not in stored and gw.admin_token not in stored
    assert rows[0].session_hash == hashlib.sha256(session.encode()).hexdigest()


async def test_revoking_the_admin_token_ends_its_sessions(make_gateway: GatewayFactory) -> None:
    """A session cookie from an admin token stops working as soon as the token is revoked."""
    gw = await make_gateway()
    ops = await gw.token("ops", ["admin"])
    await sign_in(gw.client, ops)
    assert (await gw.client.get("/console/tokens", allow_redirects=False)).status == 200
    await gw.app[appkeys.TOKENS].revoke("ops")
    for path in PAGES:
        assert (await gw.client.get(path, allow_redirects=False)).status == 303, path


async def test_sign_out_ends_the_session_even_for_a_copied_cookie(make_gateway: GatewayFactory) -> None:
    """After sign-out the old cookie value is dead in the store, not just deleted in this browser."""
    gw = await make_gateway()
    csrf = await sign_in(gw.client, gw.admin_token)
    stolen = session_cookie(gw.client)
    resp = await gw.client.post("/console/signout", data={"csrf": csrf}, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/console/signin")
    gw.client.session.cookie_jar.clear()
    gw.client.session.cookie_jar.update_cookies({"gateway_console": stolen})
    assert (await gw.client.get("/console", allow_redirects=False)).status == 303


async def test_a_session_works_on_another_replica(
    make_gateway: GatewayFactory, aiohttp_client: Any, keyring: Any, store_url: str
) -> None:
    """Sessions live in the shared store: a cookie issued by one replica opens the console on another."""
    gw = await make_gateway()
    await sign_in(gw.client, gw.admin_token)
    other = await aiohttp_client(ServedLikeProduction(create_app(make_config(store_url, keyring), keyring=keyring)))
    other.session.cookie_jar.update_cookies({"gateway_console": session_cookie(gw.client)})
    assert (await other.get("/console", allow_redirects=False)).status == 200


@pytest.mark.parametrize("path", ["/console/signin", *PAGES[:-1]])
async def test_pages_carry_a_strict_csp_and_no_inline_code(make_gateway: GatewayFactory, path: str) -> None:
    """Every page has a CSP without unsafe-inline, and no inline script, style element or style attribute."""
    gw = await make_gateway()
    if path != "/console/signin":
        await sign_in(gw.client, gw.admin_token)
    resp = await gw.client.get(path)
    csp = resp.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"
    html = await resp.text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert "<style" not in html and " style=" not in html
    assert gw.admin_token not in html


async def test_the_token_never_travels_in_a_url(make_gateway: GatewayFactory) -> None:
    """Sign-in posts the token in the body; a token in the query string signs nobody in."""
    gw = await make_gateway()
    page = await (await gw.client.get("/console/signin")).text()
    assert re.search(r'<form method="post" action="/console/signin">', page)
    resp = await gw.client.get(f"/console/signin?token={gw.admin_token}", allow_redirects=False)
    assert resp.status == 200 and "gateway_console=" not in resp.headers.get("Set-Cookie", "")
    assert (await gw.client.get("/console", allow_redirects=False)).status == 303
