"""Proxy calls reach their view without aiohttp's generic dispatch: the one hot path, kept short.

Why it exists: every proxied call used to pay aiohttp's application layer before any gateway work:
the router walking the path's prefixes back to ``/v1/proxy/credential`` (a dict lookup and a split
per segment), a coroutine for the router and one for the application, and the wrapper aiohttp puts
around the middleware chain (a coroutine and two attribute swaps). Here a request whose path starts
with ``/v1/proxy/credential/`` or ``/v1/proxy/sync/`` is matched by the one proxy resource of its
kind and method (its own ``resolve``: the same pattern and percent-decoding; the router tried the
seven methods' resources in turn, a regex each), given the match info aiohttp would give it, and
handed to the gateway's one middleware with the view. Everything else, and a proxy call aiohttp must
treat specially (``Expect``, another method, no match), takes aiohttp's path unchanged, so every
request gets the answer the router would have produced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from gateway.aiohttp_compat import handle_before_app, set_match_info

Dispatch = Callable[[web.Request], Awaitable[web.StreamResponse]]
PREFIX = "/v1/proxy/"


def route_proxy_first(runner: web.AppRunner) -> None:
    """Call after ``runner.setup()``; a no-op for an app without the proxy routes (ops, metrics)."""
    app = runner.app
    resources = _proxy_resources(app)
    if resources is not None and len(app.middlewares) == 1:
        handle_before_app(runner, lambda generic: _dispatcher(app, resources, app.middlewares[0], generic))


def _proxy_resources(app: web.Application) -> dict[tuple[str, str], web.AbstractResource] | None:
    """The proxy resource of each (kind, method), or None when matching them first could answer
    otherwise than the router: a sub-application, or a resource under ``/v1/proxy/`` of another shape."""
    found: dict[tuple[str, str], web.AbstractResource] = {}
    for resource in app.router.resources():
        if isinstance(resource, web.PrefixedSubAppResource):
            return None
        if not resource.canonical.startswith(PREFIX):
            continue
        kind = resource.canonical[len(PREFIX) :].split("/", 1)[0]
        methods = [route.method for route in resource]
        if kind not in ("credential", "sync") or len(methods) != 1 or (kind, methods[0]) in found:
            return None
        found[(kind, methods[0])] = resource
    return found or None


def _dispatcher(
    app: web.Application,
    resources: dict[tuple[str, str], web.AbstractResource],
    middleware: Middleware,
    generic: Dispatch,
) -> Dispatch:
    async def dispatch(request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if path.startswith(PREFIX) and hdrs.EXPECT not in request.headers:
            resource = resources.get((path[len(PREFIX) : path.find("/", len(PREFIX))], request.method))
            if resource is not None:
                match_info, _ = await resource.resolve(request)
                if match_info is not None:
                    match_info.add_app(app)
                    match_info.freeze()
                    set_match_info(request, match_info)
                    return await middleware(request, match_info.handler)
        return await generic(request)

    return dispatch
