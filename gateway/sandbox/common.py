"""What every sandbox upstream shares: knobs, the request recorder, rate limiting, faults, admin routes.

A provider module supplies only its ``Flavor`` (how it authenticates and how its errors and limit
headers look) and its routes; ``sandbox_app`` wraps them in one middleware that records the request,
applies latency and injected faults, checks auth, counts the request against the rate limit and
the daily quota, and stamps the provider's limit headers on every answer. Tests steer all of it
through ``app[SANDBOX]`` (Python) or the ``/_sandbox`` admin routes (HTTP).
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import socket
import string
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MASK = "***"
_SECRET_HEADERS = re.compile(r"(authorization|cookie|api[-_]?key|token|secret)", re.IGNORECASE)
_SECRET_FIELDS = re.compile(r"(secret|token|password|code)", re.IGNORECASE)
Fault = Literal["timeout", "reset", "5xx", "malformed", "cut_off", "garbled"]
_SPOILERS = ("cut_off", "garbled")  # faults that let the request be handled, then spoil its answer
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z0-9-]{2,}$")


def is_email(value: Any) -> bool:
    """The check all four providers apply to email fields (close enough to each one's own)."""
    return isinstance(value, str) and _EMAIL.match(value) is not None


def random_id(prefix: str, length: int, alphabet: str = BASE62) -> str:
    """``prefix`` + ``length`` random characters: the shape of Stripe, Airtable and request ids."""
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def utc_iso(ts: float, *, offset: str = "Z") -> str:
    """Millisecond ISO-8601 in UTC; Salesforce writes the zone as ``+0000``, the others as ``Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}{offset}"


class Knobs(BaseModel):
    """How the sandbox misbehaves; every field can be changed while it runs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    rate_limit: int | None = Field(default=None, ge=1, description="requests per rate_window; None = unlimited")
    rate_window: float = Field(default=1.0, gt=0, description="seconds")
    penalty: float = Field(default=0, ge=0, description="seconds every request is refused after a breach")
    daily_limit: int | None = Field(default=None, ge=1, description="requests before the daily quota is spent")
    latency: float = Field(default=0, ge=0, description="seconds added before every answer")
    fault: Fault | None = None
    fault_count: int | None = Field(default=None, ge=1, description="requests the fault hits; None = all")
    fault_status: int = Field(default=500, ge=500, le=599, description="status of the 5xx fault")
    fault_retry_after: float | None = Field(default=None, ge=0, description="Retry-After on the 5xx fault")
    hang: float = Field(default=30, ge=0, description="seconds the timeout fault stalls before answering")
    validation_errors: int = Field(default=0, ge=0, description="next N written records fail validation")
    token_ttl: float = Field(default=7200, gt=0, description="lifetime of OAuth access tokens issued")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the upstream received it, with secrets masked; ``at`` is loop time."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: str
    at: float

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body, keep_blank_values=True))


def _mask_header(name: str, value: str) -> str:
    if not _SECRET_HEADERS.search(name):
        return value
    scheme, _, rest = value.partition(" ")
    keep_scheme = name.lower() in ("authorization", "proxy-authorization") and rest
    return f"{scheme} {MASK}" if keep_scheme else MASK


def _mask_body(content_type: str, body: bytes) -> str:
    text = body.decode("utf-8", errors="replace")
    if content_type != "application/x-www-form-urlencoded":
        return text
    pairs = parse_qsl(text, keep_blank_values=True)
    return "&".join(f"{k}={MASK if _SECRET_FIELDS.search(k) else v}" for k, v in pairs)


class WindowLimiter:
    """Sliding-window request counter per key, with an optional lock-out after a breach (Airtable)."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._blocked_until: dict[str, float] = {}

    def admit(self, key: str, now: float, *, limit: int, window: float, penalty: float) -> float:
        """Count one request; return 0 if it may pass, else the seconds until one would."""
        until = self._blocked_until.get(key, 0.0)
        if now < until:
            return until - now
        hits = self._window(key, now, window)
        if len(hits) >= limit:
            if penalty:
                self._blocked_until[key] = now + penalty
                return penalty
            return max(hits[0] + window - now, 0.001)
        hits.append(now)
        return 0.0

    def remaining(self, key: str, now: float, *, limit: int, window: float) -> int:
        return max(limit - len(self._window(key, now, window)), 0)

    def _window(self, key: str, now: float, window: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        return hits


class Reject(Exception):
    """Raised by handlers to answer with a provider-shaped error response."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class Flavor:
    """One provider's manners: auth check, error bodies and limit headers. Subclasses override."""

    name = "sandbox"
    public_prefixes: tuple[str, ...] = ()
    # Whether the provider's throttled answers carry Retry-After (Stripe, Airtable, Salesforce: none).
    sends_retry_after = True

    def authenticate(self, request: web.Request, state: SandboxState) -> bool:
        raise NotImplementedError

    def unauthorized(self) -> web.Response:
        raise NotImplementedError

    def throttled(self, retry_after: float, *, daily: bool) -> web.Response:
        raise NotImplementedError

    def server_error(self, status: int) -> web.Response:
        raise NotImplementedError

    def route_missing(self, request: web.Request) -> web.Response:
        return web.json_response({"error": "NOT_FOUND"}, status=404)

    def limit_key(self, request: web.Request) -> str:
        """Which bucket a request counts against (Airtable: its base)."""
        return "account"

    def limit_headers(self, state: SandboxState, key: str) -> dict[str, str]:
        return {}


class SandboxState:
    """Everything a test may read or steer: knobs, recorded requests, the object store."""

    def __init__(self, flavor: Flavor, *, knobs: Knobs) -> None:
        self.flavor = flavor
        self.defaults = knobs.model_copy()
        self.knobs = knobs.model_copy()
        self.requests: list[RecordedRequest] = []
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self.limiter = WindowLimiter()
        self.daily_used = 0
        self.base_url = ""

    def set_knobs(self, **changes: Any) -> Knobs:
        """Validate and apply some knobs (the others keep their values); returns the result."""
        self.knobs = Knobs.model_validate({**self.knobs.model_dump(), **changes})
        return self.knobs

    def reset(self) -> None:
        """Back to a fresh sandbox: default knobs, no records, no recorded requests, fresh quotas."""
        self.knobs = self.defaults.model_copy()
        self.requests.clear()
        self.objects.clear()
        self.limiter = WindowLimiter()
        self.daily_used = 0

    def change(self, obj: str, action: str, record_id: str | None, data: dict[str, Any]) -> dict[str, Any] | None:
        """Create, update or delete a record as if someone changed it in the provider's own UI.

        Returns the record (None after a delete); ``KeyError`` when the object or record is unknown.
        """
        raise KeyError(obj)

    def table(self, name: str) -> dict[str, dict[str, Any]]:
        return self.objects.setdefault(name, {})

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith(path_prefix) and (method is None or r.method == method)]

    def take_validation_error(self) -> bool:
        """Consume one injected validation error, if any is armed."""
        if self.knobs.validation_errors:
            self.knobs.validation_errors -= 1
            return True
        return False

    def take_fault(self) -> Fault | None:
        knobs = self.knobs
        if knobs.fault is None:
            return None
        fault = knobs.fault
        if knobs.fault_count is not None:
            if knobs.fault_count <= 1:
                knobs.fault, knobs.fault_count = None, None
            else:
                knobs.fault_count -= 1
        return fault

    def admit(self, key: str) -> tuple[float, bool]:
        """Count a request against the window and the daily quota: (retry_after, daily_exhausted)."""
        knobs = self.knobs
        if knobs.daily_limit is not None and self.daily_used >= knobs.daily_limit:
            return 3600.0, True
        if knobs.rate_limit is not None:
            now = asyncio.get_running_loop().time()
            wait = self.limiter.admit(key, now, limit=knobs.rate_limit, window=knobs.rate_window, penalty=knobs.penalty)
            if wait:
                return wait, False
        self.daily_used += 1
        return 0.0, False

    def window_remaining(self, key: str) -> int | None:
        knobs = self.knobs
        if knobs.rate_limit is None:
            return None
        now = asyncio.get_running_loop().time()
        return self.limiter.remaining(key, now, limit=knobs.rate_limit, window=knobs.rate_window)

    async def record(self, request: web.Request) -> None:
        body = await request.read()
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=list(request.query.items()),
                headers={k: _mask_header(k, v) for k, v in request.headers.items()},
                body=_mask_body(request.content_type, body),
                at=asyncio.get_running_loop().time(),
            )
        )


SANDBOX = web.AppKey("sandbox", SandboxState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def sandbox_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record -> latency -> faults -> auth -> rate limit -> provider handler -> limit headers."""
    state = request.app[SANDBOX]
    if request.path.startswith("/_sandbox/"):
        return await handler(request)
    await state.record(request)
    if state.knobs.latency:
        await asyncio.sleep(state.knobs.latency)
    fault = state.take_fault()
    if fault == "timeout":
        await asyncio.sleep(state.knobs.hang)
    elif fault is not None and fault not in _SPOILERS:
        return _fault_response(fault, request, state)
    flavor = state.flavor
    key = flavor.limit_key(request)
    try:
        if not request.path.startswith(flavor.public_prefixes):
            _check_access(request, state, key)
        response = await handler(request)
    except Reject as exc:
        response = exc.response
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        response = flavor.route_missing(request)
    response.headers.update(flavor.limit_headers(state, key))
    if fault in _SPOILERS:
        return await _spoiled(fault == "cut_off", request, response)
    return response


async def _spoiled(cut_off: bool, request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """The handled request's answer with half its body: as a whole answer (``garbled``), or announced
    whole, half sent and the connection reset (``cut_off``). A write it answers was applied."""
    body = response.body if isinstance(response, web.Response) and isinstance(response.body, bytes) else b""
    if not cut_off:
        assert isinstance(response, web.Response)
        response.body = body[: len(body) // 2]
        return response
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    stream = web.StreamResponse(status=response.status, headers=headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    _reset(request)
    return stream


def _reset(request: web.Request) -> None:
    """SO_LINGER 0 makes close() send a TCP RST: the client sees "connection reset by peer"."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport else None
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if transport is not None:
        transport.abort()


def _check_access(request: web.Request, state: SandboxState, key: str) -> None:
    if not state.flavor.authenticate(request, state):
        raise Reject(state.flavor.unauthorized())
    retry_after, daily = state.admit(key)
    if retry_after:
        response = state.flavor.throttled(retry_after, daily=daily)
        if state.flavor.sends_retry_after:
            response.headers.setdefault("Retry-After", str(max(1, round(retry_after))))
        raise Reject(response)


def _fault_response(fault: Fault, request: web.Request, state: SandboxState) -> web.Response:
    if fault == "reset":
        _reset(request)
        return web.Response(status=500)
    if fault == "malformed":
        return web.Response(status=200, text='{"records": [{"id": ', content_type="application/json")
    response = state.flavor.server_error(state.knobs.fault_status)
    if state.knobs.fault_retry_after is not None:
        response.headers["Retry-After"] = str(state.knobs.fault_retry_after)
    return response


async def json_body(request: web.Request, bad: Callable[[str], web.Response]) -> Any:
    """The request's JSON body, or the provider's own "malformed request" answer."""
    try:
        return json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise Reject(bad("request body is not valid JSON")) from None


# --- admin routes ------------------------------------------------------------------------------------


async def _admin_requests(request: web.Request) -> web.Response:
    state = request.app[SANDBOX]
    return web.json_response({"requests": [asdict(r) for r in state.requests]})


async def _admin_knobs(request: web.Request) -> web.Response:
    state = request.app[SANDBOX]
    if request.method == "POST":
        try:
            changes = json.loads(await request.read() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object of knobs")
            state.set_knobs(**changes)
        except ValidationError as exc:
            return web.json_response({"error": exc.errors(include_url=False, include_context=False)}, status=400)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return web.json_response({"error": str(exc) or "body must be a JSON object of knobs"}, status=400)
    return web.json_response(state.knobs.model_dump())


async def _admin_change(request: web.Request) -> web.Response:
    """``POST /_sandbox/records/{object}`` ``{"action": "create|update|delete", "id": ..., "data": {...}}``."""
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    action = body.get("action") if isinstance(body, dict) else None
    data = body.get("data", {}) if isinstance(body, dict) else None
    if action not in ("create", "update", "delete") or not isinstance(data, dict):
        return web.json_response({"error": 'expected {"action": "create|update|delete", "id", "data": {}}'}, status=400)
    try:
        record = request.app[SANDBOX].change(request.match_info["object"], action, body.get("id"), data)
    except KeyError as exc:
        return web.json_response({"error": f"not found: {exc}"}, status=404)
    return web.json_response({"record": record})


async def _admin_reset(request: web.Request) -> web.Response:
    request.app[SANDBOX].reset()
    return web.Response(status=204)


ADMIN_ROUTES = [
    web.get("/_sandbox/requests", _admin_requests),
    web.get("/_sandbox/knobs", _admin_knobs),
    web.post("/_sandbox/knobs", _admin_knobs),
    web.post("/_sandbox/reset", _admin_reset),
    web.post("/_sandbox/records/{object:.+}", _admin_change),
]


def sandbox_app(state: SandboxState, routes: list[web.RouteDef]) -> web.Application:
    """An aiohttp app serving ``routes`` behind the shared middleware and the admin routes."""
    app = web.Application(middlewares=[sandbox_middleware])
    app[SANDBOX] = state
    app.add_routes(ADMIN_ROUTES)
    app.add_routes(routes)
    return app


def now() -> float:
    """Wall-clock seconds, for the timestamps providers put in records."""
    return time.time()
