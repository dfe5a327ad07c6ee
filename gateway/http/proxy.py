"""``/v1/proxy/sync/{sync_id}/{path}`` and ``/v1/proxy/credential/{credential_id}/{path}`` (scope ``proxy``).

The view resolves the id (403 for a token not allowed to use it, 404 for an unknown one, both before
any upstream traffic), takes the path exactly as the client sent it (aiohttp's router has already
percent-decoded ``match_info``, which would hide ``%2e%2e`` from the checks), prepares the body, and
hands everything to ``UpstreamClient.stream``. The answer is relayed chunk by chunk: ``write`` waits
for the client to drain, which stops reads from the upstream meanwhile (back-pressure).

Once the first byte went out, a failure can no longer become a JSON error: the client connection is
closed instead, so the client sees a truncated body, never a hang or a body that looks complete.
Cookies pass through both ways like any end-to-end header (SPEC.md: everything but hop-by-hop,
``Authorization`` and ``Host``); the gateway itself never uses cookies.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import structlog
from aiohttp import web
from multidict import CIMultiDict

from gateway.aiohttp_compat import BufferedHeadResponse
from gateway.config import ServerConfig
from gateway.domain.objects import Credential
from gateway.errors import GatewayError, InvalidPath, InvalidRequest, PayloadTooLarge
from gateway.http import appkeys
from gateway.http.call import CALL, Call
from gateway.http.endpoints import Endpoint
from gateway.http.middlewares import require_access, single_header
from gateway.http.priority import apply_share, stamp
from gateway.upstream.body import REPLAYABLE_BYTES, StreamedBody, read_small
from gateway.upstream.client import UpstreamClient
from gateway.upstream.headers import end_to_end
from gateway.upstream.response import UpstreamResponse

log = structlog.get_logger(__name__)
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# Set by this layer (Content-Length re-added when known; Expect is answered by the gateway itself).
# The tail matches anything, newlines included, so that a hostile path gets its 400, not a 404.
_ANY = r"[\s\S]*"
_NOT_FORWARDED = ("Host", "Authorization", "Content-Length", "Expect")
# What a client may claim about the proxies it came through: dropped unless server.trust_forwarded.
_CLIENT_CLAIMS = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Port",
    "X-Real-IP",
)
_NOT_FORWARDED_UNTRUSTED = _NOT_FORWARDED + _CLIENT_CLAIMS
_OURS = "x-gateway-"  # the gateway's own request headers, read by the gateway only
COST_HEADER = "x-gateway-cost"


async def proxy_sync(request: web.Request) -> web.StreamResponse:
    parts = _raw_parts(request)
    sync_id = _checked_id(request, "sync_id", parts[4])
    require_access(request, "sync", sync_id)
    app = request.app  # read once: each ``request.app`` goes through the match info's ``current_app``
    client = app[appkeys.UPSTREAM]
    credential = await client.credentials.for_sync(sync_id)
    return await forward(request, client, app[appkeys.CONFIG].server, credential, path=parts[5])


async def proxy_credential(request: web.Request) -> web.StreamResponse:
    parts = _raw_parts(request)
    credential_id = _checked_id(request, "credential_id", parts[4])
    require_access(request, "credential", credential_id)
    app = request.app
    client = app[appkeys.UPSTREAM]
    credential = await client.credentials.credential(credential_id)
    return await forward(request, client, app[appkeys.CONFIG].server, credential, path=parts[5])


def _checked_id(request: web.Request, name: str, raw: str) -> str:
    """The id as routed, refused when it holds an encoded slash (``a%2Fb``, which aiohttp routes as the
    id ``a/b``) or its raw segment ``raw`` decodes differently."""
    object_id = request.match_info[name]
    if "/" in object_id or unquote(raw) != object_id:
        raise InvalidPath(f"{name}: encoded slashes are not allowed in ids", field=name)
    return object_id


def _raw_parts(request: web.Request) -> list[str]:
    """``['', 'v1', 'proxy', kind, id, path]`` from the undecoded request target."""
    parts = request.rel_url.raw_path.split("/", 5)
    return parts + [""] * (6 - len(parts))


async def forward(
    request: web.Request, client: UpstreamClient, server: ServerConfig, credential: Credential, *, path: str
) -> web.StreamResponse:
    """Relay ``request`` to ``path`` (as the client sent it) under ``credential``'s upstream through
    ``client``, and stream the answer back."""
    call = request[CALL]
    call.provider = credential.provider
    apply_share(request, call)
    call.credential = credential.id
    headers = _upstream_headers(request, call, trusted=server.trust_forwarded)
    idle = min(client.timeouts(credential)["read"], server.body_idle_timeout)
    body = await _body(request, server, headers, read_timeout=idle)
    async with client.stream(
        credential,
        request.method,
        path,
        query=request.rel_url.raw_query_string,
        headers=headers,
        body=body,
        cost=_cost(request),
    ) as upstream:
        call.pacing_wait_ms = round(upstream.pacing_wait * 1000, 1)
        return await _relay(request, call, upstream)


def _cost(request: web.Request) -> int | None:
    """``x-gateway-cost``: the tokens this call takes from each of its buckets (the pacer checks the top)."""
    raw = single_header(request, COST_HEADER)
    if raw is None:
        return None
    value = raw.strip()
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise InvalidRequest(f"{COST_HEADER}: {raw[:20]!r} is not a whole number of at least 1", field=COST_HEADER)
    return int(value)


def _upstream_headers(request: web.Request, call: Call, *, trusted: bool) -> CIMultiDict[str]:
    """The client's end-to-end headers plus ours; what the client claims about the path it came by
    (``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``) only with ``server.trust_forwarded``."""
    drop = _NOT_FORWARDED if trusted else _NOT_FORWARDED_UNTRUSTED
    headers = end_to_end(request.headers, drop=drop, drop_prefix=_OURS)
    peer = request.remote or "unknown"
    seen = ", ".join(request.headers.getall("X-Forwarded-For", ())) if trusted else ""
    headers["X-Forwarded-For"] = f"{seen}, {peer}" if seen else peer
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Request-Id"] = call.request_id
    return headers


async def _body(
    request: web.Request, server: ServerConfig, headers: CIMultiDict[str], *, read_timeout: float
) -> bytes | StreamedBody | None:
    """No body, the whole body (small, so a 429 can be retried), or the body as it arrives.

    Either way the first ``REPLAYABLE_BYTES`` are read *before* pacing: a client dawdling over them
    holds no pacing slot and no upstream connection. The rest of a larger body streams while the
    call holds its slot, within the client's read budget (upstream/body.py): idle gaps up to
    ``read_timeout``, and ``server.min_body_rate`` bytes/s on average.
    """
    limit, length = server.max_body_bytes, request.content_length
    if limit and length is not None and length > limit:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes", limit=limit)
    if not request.body_exists:
        return None
    budget = {"read_timeout": read_timeout, "min_rate": server.min_body_rate}
    if length is not None and length <= REPLAYABLE_BYTES:
        return await read_small(request.content, length=length, **budget)
    if length is not None:
        headers["Content-Length"] = str(length)  # the upstream gets the framing the client chose
    body = StreamedBody(request.content, limit=limit, **budget)
    await body.prefetch(REPLAYABLE_BYTES)
    return body


SMALL_BODY = 64 * 1024  # bytes: an answer up to this goes out with its head in one write


async def _relay(request: web.Request, call: Call, upstream: UpstreamResponse) -> web.StreamResponse:
    length = upstream.headers.get("Content-Length", "")
    small = length.isdigit() and int(length) <= SMALL_BODY
    kind = BufferedHeadResponse if small else web.StreamResponse
    response = kind(status=upstream.status, headers=end_to_end(upstream.headers))
    response.headers["x-gateway-pacing-wait-ms"] = str(call.pacing_wait_ms)
    stamp(call, response)
    try:
        await response.prepare(request)
        while chunk := await upstream.next_chunk():
            await response.write(chunk)
        await response.write_eof()
    except (GatewayError, ConnectionError) as exc:
        # Upstream died mid-body (truncate, never pretend the body completed) or the client left
        # (leaving the ``stream`` block then drops the upstream connection, cancelling its request).
        log.warning("proxy_body_interrupted", reason=getattr(exc, "code", exc.__class__.__name__))
        _close(request)
    return response


def _close(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


def _endpoints() -> list[Endpoint]:
    endpoints = []
    for kind, handler, key in (("sync", proxy_sync, "sync_id"), ("credential", proxy_credential, "credential_id")):
        for method in METHODS:
            endpoints.append(
                Endpoint(
                    method,
                    f"/v1/proxy/{kind}/{{{key}}}/{{path:{_ANY}}}",
                    handler,
                    name=f"proxy_{kind}.{method.lower()}",
                    summary=f"Proxy {method} to the upstream of a {kind}, with its auth injected",
                    scope="proxy",
                    raw_body=True,
                    statuses=_STATUSES,
                )
            )
    return endpoints


_STATUSES: dict[int, Any] = {
    400: "invalid path, an x-gateway-priority other than high, normal, low, or a bad x-gateway-cost",
    401: "missing or bad token",
    403: "token lacks the scope or the id",
    404: "unknown id",
    408: "request body too slow",
    413: "request body too large",
    429: "pacing queue full",
    502: "upstream unavailable or credential rejected",
    504: "upstream timed out",
}
ENDPOINTS = _endpoints()
