"""The one error tree of the gateway.

Every error the gateway itself produces is a ``GatewayError`` leaf carrying its HTTP status and a
stable ``code``; only ``http.middlewares.gateway_middleware`` turns one into the JSON body
``{"error", "docs", "code", ...extra}`` promised by SPEC.md. Foreign exceptions (aiohttp, redis,
SQLAlchemy, pydantic) are translated into a leaf in exactly one place each, with ``raise ... from``.

    GatewayError
    ├── InvalidRequest            400 invalid_request
    │   └── InvalidPath           400 invalid_path
    ├── UpstreamValidationError   400 upstream_validation_error
    ├── Unauthorized              401 unauthorized
    ├── Forbidden                 403 forbidden
    ├── UpstreamDenied            403 upstream_denied
    ├── NotFound                  404 not_found
    ├── MethodNotAllowed          405 method_not_allowed
    ├── RequestTimeout            408 request_timeout
    ├── Conflict                  409 conflict
    │   └── MutationOutcomeUnknown 409 mutation_outcome_unknown
    ├── PayloadTooLarge           413 payload_too_large
    ├── RateLimited               429 rate_limited (Retry-After)
    ├── ConsumerTimeout           500 consumer_timeout
    ├── InternalError             500 internal_error
    ├── MutationInterrupted       500 mutation_interrupted
    ├── UpstreamUnavailable       502 upstream_unavailable
    ├── UpstreamAuthFailed        502 upstream_auth_failed
    ├── BackendUnavailable        503 backend_unavailable
    ├── Overloaded                503 overloaded (Retry-After)
    └── UpstreamTimeout           504 upstream_timeout

Configuration and key problems outside a request (``ConfigError``, ``KeyNotFound``, ``RotationRefused``) are
``GatewayError`` too, so the CLI can print the same sentence and exit with code 2 or 1.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import BaseModel, TypeAdapter, ValidationError

DEFAULT_DOCS = "/docs"  # the gateway's own copy of docs/errors.md, on its main listener
_docs = {"base": DEFAULT_DOCS}


def set_docs_base(base: str) -> None:
    """Where the ``docs`` links of error bodies point (``server.docs_url``); one value per process, set by
    ``create_app``, because bodies are also built where no request is at hand (the journal, the parser)."""
    _docs["base"] = base.rstrip("/")


def docs_link(code: str) -> str:
    return f"{_docs['base']}/errors#{code}"


class GatewayError(Exception):
    """Base of every error the gateway reports to a client or an operator."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body of SPEC.md's error shape."""
        return {
            "error": self.message,
            "docs": [docs_link(self.code)],
            "code": self.code,
            **self.extra,
        }

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(GatewayError):
    """400: ``fields`` always lists the failing field paths (docs/api.md), also where one ``field`` is named."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, **extra: Any) -> None:
        if "field" in extra and "fields" not in extra:
            extra["fields"] = [extra["field"]]
        super().__init__(message, **extra)


def describe_validation_error(exc: ValidationError, *, prefix: str) -> str:
    """One sentence per problem, naming the dotted key: ``pacing.backend: Input should be ...``."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        problems.append(f"{loc or prefix}: {err['msg']}")
    return "invalid " + prefix + ": " + "; ".join(problems)


def invalid_request(exc: ValidationError, *, what: str = "body") -> InvalidRequest:
    """The 400 for a pydantic refusal, wherever it happens (a view, or a store re-validating a merge)."""
    fields = [".".join(str(p) for p in e["loc"]) or what for e in exc.errors(include_url=False)]
    return InvalidRequest(describe_validation_error(exc, prefix=what), fields=fields)


def validate(model: type[BaseModel] | TypeAdapter[Any], data: Any, *, what: str = "body") -> Any:
    """Validate ``data``; the error names each failing field (``records.0.data: ...``)."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data)
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc, what=what) from None


class InvalidPath(InvalidRequest):
    code = "invalid_path"


class UpstreamValidationError(GatewayError):
    status = 400
    code = "upstream_validation_error"


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="gateway"'}


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class UpstreamDenied(GatewayError):
    """The upstream's address is refused by the egress policy (``upstream.deny``/``upstream.allow``)."""

    status = 403
    code = "upstream_denied"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class MethodNotAllowed(GatewayError):
    """The path exists, the method does not; ``Allow`` lists the ones that do (RFC 9110 15.5.6)."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allowed: frozenset[str] | set[str] = frozenset(), **extra: Any) -> None:
        super().__init__(message, **extra)
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(sorted(self.allowed))} if self.allowed else {}


class RequestTimeout(GatewayError):
    """The client sent its request body slower than the read timeout allows."""

    status = 408
    code = "request_timeout"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class MutationOutcomeUnknown(Conflict):
    """The replica running this Idempotency-Key's mutation stopped where the upstream cannot tell what it did."""

    code = "mutation_outcome_unknown"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class RateLimited(GatewayError):
    """The pacing queue wait would exceed ``max_wait``; the caller may retry after ``retry_after``."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class ConsumerTimeout(GatewayError):
    status = 500
    code = "consumer_timeout"


class InternalError(GatewayError):
    status = 500
    code = "internal_error"


class MutationInterrupted(GatewayError):
    """A mutation stopped midway (its replica died or failed); recovery settled what the upstream applied."""

    status = 500
    code = "mutation_interrupted"


class UpstreamUnavailable(GatewayError):
    status = 502
    code = "upstream_unavailable"


class UpstreamAnswerUnreadable(UpstreamUnavailable):
    """The upstream answered, but its body was cut off, over ``RESULT_LIMIT`` or (a 2xx) not JSON: a
    write it answered so may have been applied, so a mutation treats it as an unknown outcome."""


class UpstreamAuthFailed(GatewayError):
    status = 502
    code = "upstream_auth_failed"


class BackendUnavailable(GatewayError):
    status = 503
    code = "backend_unavailable"


class Overloaded(GatewayError):
    """A listener holds ``server.max_connections`` connections already; this one is turned away."""

    status = 503
    code = "overloaded"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class UpstreamTimeout(GatewayError):
    status = 504
    code = "upstream_timeout"


class ConfigError(GatewayError):
    """Invalid configuration; the CLI exits 2 with this message (which names the key)."""

    status = 500
    code = "invalid_config"


class RotationRefused(GatewayError):
    """``gateway keys rotate`` while a live replica lacks the newest key; the CLI exits 1."""

    status = 503
    code = "rotation_refused"


class KeyNotFound(GatewayError):
    """A stored secret was encrypted with a key id no longer configured."""

    status = 500
    code = "encryption_key_missing"
