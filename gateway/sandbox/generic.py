"""A generic upstream for the proxy's tests and benches: echo, streaming, faults, OAuth2, 429s.

Every behaviour a proxy test needs from "some REST API", each on its own path, so one instance
serves a whole test module. ``GenericState`` (``app[GENERIC]``) holds the knobs and the counters
the tests read back (refreshes done, bytes received, downloads the client abandoned).

    *    /echo/{any}           JSON: method, raw path, raw query, headers (lists), body (text) and size
    GET  /bytes/{n}            n bytes, streamed in 64 KiB chunks; ``?length=1`` sends Content-Length
    POST /upload               reads the body as it arrives; JSON: received bytes and their sha256
    GET  /slow?delay=s         waits before answering; ``&body=1`` sends headers first, then waits
    GET  /redirect             302 to /echo/redirected
    GET  /die?after=n          promises 1 MiB, sends n bytes, then drops the connection
    GET  /gzip                 a gzip body with Content-Encoding: gzip
    *    /protected/{any}      401 unless ``Authorization: Bearer <state.valid_token>``, then echo
    POST /oauth/token          refresh_token grant: counts refreshes, rotates ``valid_token``
    *    /limited/{any}        429 with Retry-After while ``state.throttle`` > 0, then echo
    *    /answer/{any}         ``state.answer_status`` with ``state.answer_headers`` and ``{"ok": true}``
                               (e.g. a 200 that reports the window exhausted)
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_CHUNK = 64 * 1024
_BLOCK = b"x" * _CHUNK


@dataclass
class GenericState:
    valid_token: str = "token-0"
    client_id: str = "client-1"
    client_secret: str = "client-secret-1"
    refresh_token: str = "refresh-0"
    refreshes: int = 0
    token_status: int = 200  # set to 400 to make every refresh fail
    token_delay: float = 0.0
    reject_all: bool = False  # /protected answers 401 whatever the token
    throttle: int = 0
    retry_after: int = 1
    received: int = 0
    requests: int = 0
    aborted_downloads: int = 0
    answer_status: int = 200
    answer_headers: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)


GENERIC = web.AppKey("generic", GenericState)


def create_generic_app(state: GenericState | None = None) -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app[GENERIC] = state or GenericState()
    app.middlewares.append(_count)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/bytes/{n}", download)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/slow", slow)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/die", die)
    app.router.add_get("/gzip", gzipped)
    app.router.add_route("*", "/protected/{tail:.*}", protected)
    app.router.add_post("/oauth/token", token)
    app.router.add_route("*", "/limited/{tail:.*}", limited)
    app.router.add_route("*", "/answer/{tail:.*}", answer)
    return app


@web.middleware
async def _count(request: web.Request, handler: Any) -> web.StreamResponse:
    state = request.app[GENERIC]
    state.requests += 1
    state.paths.append(request.raw_path)
    response: web.StreamResponse = await handler(request)
    return response


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    return web.json_response(
        {
            "method": request.method,
            "path": request.rel_url.raw_path,
            "query": request.rel_url.raw_query_string,
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
            "size": len(body),
        },
        headers={"X-RateLimit-Remaining": "99", "Set-Cookie": "session=abc; Path=/"},
    )


async def download(request: web.Request) -> web.StreamResponse:
    size = int(request.match_info["n"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if request.query.get("length"):
        response.content_length = size
    await response.prepare(request)
    sent = 0
    try:
        while sent < size:
            block = _BLOCK[: min(_CHUNK, size - sent)]
            await response.write(block)
            sent += len(block)
        await response.write_eof()
    except ConnectionError:
        pass  # counted below: the reader went away
    finally:  # also runs when aiohttp cancels the handler because the connection was lost
        if sent < size:
            request.app[GENERIC].aborted_downloads += 1
    return response


async def upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    received = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        received += len(chunk)
    request.app[GENERIC].received += received
    return web.json_response({"received": received, "sha256": digest.hexdigest()})


async def slow(request: web.Request) -> web.StreamResponse:
    delay = float(request.query.get("delay", "1"))
    if not request.query.get("body"):
        await asyncio.sleep(delay)
        return web.json_response({"slow": True})
    response = web.StreamResponse()
    await response.prepare(request)
    if request.query["body"] != "late":  # ``body=late``: only the head goes before the delay
        await response.write(b"first")
    await asyncio.sleep(delay)
    await response.write(b"late")
    return response


async def redirect(_request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/echo/redirected"})


async def die(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    response.content_length = 1024 * 1024
    await response.prepare(request)
    await response.write(_BLOCK[: int(request.query.get("after", "1000"))])
    await response.drain()
    if request.transport is not None:
        request.transport.close()
    return response


async def gzipped(_request: web.Request) -> web.Response:
    body = gzip.compress(b'{"compressed": true}')
    return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})


async def protected(request: web.Request) -> web.Response:
    state = request.app[GENERIC]
    if state.reject_all or request.headers.get("Authorization") != f"Bearer {state.valid_token}":
        return web.json_response({"error": "invalid_token"}, status=401)
    return await echo(request)


async def token(request: web.Request) -> web.Response:
    state = request.app[GENERIC]
    form = await request.post()
    if state.token_delay:
        await asyncio.sleep(state.token_delay)
    good = (
        form.get("grant_type") == "refresh_token"
        and form.get("refresh_token") == state.refresh_token
        and form.get("client_id") == state.client_id
        and form.get("client_secret") == state.client_secret
    )
    if state.token_status != 200 or not good:
        status = 400 if state.token_status == 200 else state.token_status
        return web.json_response({"error": "invalid_grant"}, status=status)
    state.refreshes += 1
    state.valid_token = f"token-{state.refreshes}"
    state.refresh_token = f"refresh-{state.refreshes}"
    return web.json_response(
        {"access_token": state.valid_token, "refresh_token": state.refresh_token, "expires_in": 3600}
    )


async def limited(request: web.Request) -> web.Response:
    state = request.app[GENERIC]
    if state.throttle > 0:
        state.throttle -= 1
        return web.json_response({"error": "rate_limited"}, status=429, headers={"Retry-After": str(state.retry_after)})
    return await echo(request)


async def answer(request: web.Request) -> web.Response:
    """The configured status and headers: how a test makes the upstream say "that was the last one"."""
    state = request.app[GENERIC]
    await request.read()
    return web.json_response({"ok": True}, status=state.answer_status, headers=state.answer_headers)
