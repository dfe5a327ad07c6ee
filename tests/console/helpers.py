"""Signing in to the console over plain HTTP, as a browser's form post would."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = _CSRF.search(html)
    assert match is not None, "the page has no CSRF field"
    return match.group(1)


async def sign_in(client: TestClient[Any, Any], token: str) -> str:
    """Sign in with ``token``; returns the CSRF token of the session's forms."""
    page = await client.get("/console/signin")
    form = {"csrf": csrf_of(await page.text()), "token": token}
    resp = await client.post("/console/signin", data=form, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == "/console"
    overview = await client.get("/console")
    assert overview.status == 200
    return csrf_of(await overview.text())


def session_cookie(client: TestClient[Any, Any]) -> str:
    for cookie in client.session.cookie_jar:
        if cookie.key == "gateway_console":
            return cookie.value
    raise AssertionError("no session cookie")
