"""The gateway's one middleware: request context (id, log, metrics) -> errors -> auth, in that order.

Every response, streamed ones included, gets ``x-request-id`` through the ``on_response_prepare``
signal, so views never set it themselves.
"""

from __future__ import annotations

import asyncio
import functools
import random
import re
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import HttpVersion10, web
from aiohttp.typedefs import Middleware
from aiohttp.web_exceptions import HTTPException, HTTPMethodNotAllowed
from prometheus_client import Counter, Histogram

from gateway.domain.models import ObjectKind
from gateway.errors import (
    Forbidden,
    GatewayError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from gateway.http.call import CALL, Call
from gateway.http.endpoints import Handler
from gateway.http.throttle import AuthThrottle
from gateway.observability.metrics import ROUTES, Metrics, method_label
from gateway.observability.recent import RecentCall, RecentCalls
from gateway.observability.request_log import request_line
from gateway.store.tokens import Tokens

log = structlog.get_logger(__name__)
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
RECORDED_ROUTES = frozenset({"proxy_sync", "proxy_credential", "mutations"})


def new_request_id() -> str:
    """32 random hex digits, the length and alphabet ``uuid4().hex`` gave.

    From the process's PRNG, not ``os.urandom``: an id names a request in logs, it guards nothing, and
    the ``getrandom`` system call per request cost more than everything else in this function.
    """
    return f"{random.getrandbits(128):032x}"


@functools.lru_cache(maxsize=512)
def route_label(name: str) -> str:
    """The bounded ``route`` label of a route name: the part before the first dot. Per route name (the
    app's own, a bounded set): split and checked once, not on every call."""
    label = name.split(".", 1)[0]
    return label if label in ROUTES else "other"


def gateway_middleware(
    *,
    metrics: Metrics,
    tokens: Tokens,
    scopes: dict[str, str | None],
    throttle: AuthThrottle,
    trust_forwarded: bool,
    in_flight: set[asyncio.Task[object]],
    recent: RecentCalls | None = None,
) -> Middleware:
    """In-flight tracking -> request context (id, log line, metrics, recent calls) -> errors -> auth,
    as one middleware.

    One layer instead of four nested ones: aiohttp wraps every middleware in a partial and a
    coroutine per request, which was measurable on the proxy's hot path. The order of the steps is
    the order the layers had, so the log line and the metrics see the final status, including that
    of an error raised by authentication or by the view. ``in_flight`` holds each request's task
    while it runs, so the server can cancel the ones still running when its shutdown budget is spent.
    """
    count = _request_counter(metrics)
    authenticate = _authenticator(tokens, scopes, throttle, trust_forwarded=trust_forwarded)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            in_flight.add(task)
        sent = request.headers.get("x-request-id", "")
        generated_id = not _SANE_ID.match(sent)
        request_id = new_request_id() if generated_id else sent
        request[CALL] = call = Call(request_id, generated_id=generated_id)
        route_name = request.match_info.route.name or ""  # read once, for the scope and the label
        # aiohttp runs each request in a task of its own, with a copy of its connection's context: no
        # binding of an earlier request is left to clear (clearing copied the whole context per call).
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status, priority = 500, ""
        try:
            response = await _answer(request, call, route_name, handler, authenticate)
            status, priority = response.status, response.headers.get("x-gateway-priority", "")
            return response
        finally:
            try:
                duration = time.perf_counter() - started
                route, method = route_label(route_name), method_label(request.method)
                count(route, method, status, duration)
                if recent is not None and route in RECORDED_ROUTES:
                    recent.add(recent_call(request, call, method, status, duration, priority))
                request_line(
                    route=route,
                    method=request.method,
                    status=status,
                    duration_ms=round(duration * 1000, 2),
                    upstream=call.provider,
                    pacing_wait_ms=call.pacing_wait_ms,
                    request_id=request_id,
                    generated_id=generated_id,
                )
            finally:
                if task is not None:
                    in_flight.discard(task)

    return middleware


def recent_call(
    request: web.Request, call: Call, method: str, status: int, duration: float, priority: str
) -> RecentCall:
    """The console's row for one call (``method``: its bounded label): no query string, header, body or
    secret in it."""
    principal = call.principal
    return RecentCall(
        at=time.time(),
        request_id=call.request_id,
        token=principal.name if principal is not None else "",
        credential=call.credential,
        method=method,
        path=request.rel_url.raw_path[:512],
        status=status,
        duration_ms=round(duration * 1000, 1),
        wait_ms=call.pacing_wait_ms,
        priority=priority,
    )


def _request_counter(metrics: Metrics) -> Callable[[str, str, int, float], None]:
    """Count one request through labelled children cached by label values (all bounded sets):
    ``labels()`` takes a lock and builds a key on every call, which showed up in the profile."""
    counters: dict[tuple[str, str, int], Counter] = {}
    histograms: dict[str, Histogram] = {}

    def count(route: str, method: str, status: int, duration: float) -> None:
        """``method``: the bounded label."""
        key = (route, method, status)
        counter = counters.get(key)
        if counter is None:
            counter = counters[key] = metrics.http_requests.labels(key[0], key[1], str(status))
        counter.inc()
        histogram = histograms.get(route)
        if histogram is None:
            histogram = histograms[route] = metrics.http_duration.labels(route)
        histogram.observe(duration)

    return count


async def _answer(
    request: web.Request,
    call: Call,
    route_name: str,
    handler: Handler,
    authenticate: Callable[[web.Request, Call, str], Awaitable[None]],
) -> web.StreamResponse:
    """The one place where errors become the JSON bodies of SPEC.md; nothing else leaks."""
    try:
        if request.version < HttpVersion10:
            raise InvalidRequest("malformed HTTP request: the request line has no HTTP version")
        if request.path.startswith("/v1/"):
            await authenticate(request, call, route_name)
        return await handler(request)
    except RequestTimeout as exc:
        # A client dawdling over its body: answer and close, instead of aiohttp lingering up to 10 s
        # to read the rest of that body at the client's pace.
        request.content.feed_eof()
        response = error_response(exc)
        response.force_close()
        return response
    except GatewayError as exc:
        return error_response(exc)
    except HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http_exception(exc))
    except Exception:
        log.exception("unhandled_error", path=request.path)
        return error_response(InternalError("internal error; see the gateway log for this request id"))


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` signal: stamp every response, however it was produced (one that never
    passed the middleware, such as aiohttp's answer to an unparsable request, gets an id of its own)."""
    try:
        request_id = request[CALL].request_id
    except KeyError:  # cheaper than ``request.get``, which goes through ``Mapping.get`` on every hit
        request_id = new_request_id()
    response.headers["x-request-id"] = request_id


def error_response(exc: GatewayError) -> web.Response:
    if exc.status >= 500:
        log.warning("request_failed", code=exc.code, error=exc.message)
    return web.json_response(exc.body(), status=exc.status, headers=exc.headers())


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The metrics listener's one layer: its 404s and 405s in the JSON error shape too (aiohttp's own
    answers are plain text); it has no tokens, logs or metrics of its own to add."""
    try:
        return await handler(request)
    except HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http_exception(exc))


def _from_http_exception(exc: HTTPException) -> GatewayError:
    if exc.status == 404:
        return NotFound("no such endpoint")
    if isinstance(exc, HTTPMethodNotAllowed):
        return MethodNotAllowed("method not allowed on this endpoint", allowed=exc.allowed_methods)
    if exc.status == 413:
        return PayloadTooLarge("request body is over the configured limit")
    if exc.status == 401:
        return Unauthorized(exc.reason)
    if exc.status == 403:
        return Forbidden(exc.reason)
    return InvalidRequest(exc.reason or "bad request")


def _authenticator(
    tokens: Tokens, scopes: dict[str, str | None], throttle: AuthThrottle, *, trust_forwarded: bool
) -> Callable[[web.Request, Call, str], Awaitable[None]]:
    """Require one bearer token on ``/v1/``; ``scopes`` maps route names to the scope they need.

    An address that keeps sending bad or missing tokens is paused by ``throttle`` (429).
    """

    async def authenticate(request: web.Request, call: Call, route_name: str) -> None:
        address = client_address(request, trust_forwarded=trust_forwarded)
        throttle.check(address)
        header = single_header(request, "Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            throttle.failed(address)
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        principal = await tokens.authenticate(token.strip())
        if principal is None:
            throttle.failed(address)
            raise Unauthorized("invalid or revoked token")
        throttle.succeeded(address)
        needed = scopes.get(route_name)
        if needed is not None and not principal.has_scope(needed):
            raise Forbidden(f"this token lacks the {needed!r} scope")
        call.principal = principal

    return authenticate


def single_header(request: web.Request, name: str) -> str | None:
    """The value of a header the gateway reads (``Authorization``, ``x-gateway-*``, ``Idempotency-Key``,
    ``Content-Encoding``), None when absent; 400 naming it when sent more than once, in any case. The
    gateway never picks one: a proxy in front may have added its own to the client's, and which one
    counts would be a guess (the first, read until then, let a client's own ``x-gateway-priority`` win
    over one the proxy appended)."""
    values = request.headers.getall(name, ())
    if len(values) > 1:
        raise InvalidRequest(f"more than one {name} header: send exactly one", field=name)
    return values[0] if values else None


def client_address(request: web.Request, *, trust_forwarded: bool) -> str:
    """The peer, or behind a trusted proxy (``server.trust_forwarded``) the address that proxy saw:
    the last ``X-Forwarded-For`` entry, the one it appended itself."""
    if trust_forwarded:
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return request.remote or "unknown"


def require_access(request: web.Request, kind: ObjectKind, object_id: str) -> None:
    """403 unless the caller's token may use that object (its ``--only`` list)."""
    if not request[CALL].caller().may_use(kind, object_id):
        raise Forbidden(f"this token is not allowed to use the {kind} {object_id!r}")
