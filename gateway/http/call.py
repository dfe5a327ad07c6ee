"""What the gateway learns about one request while serving it, in one object under one request key.

The request id, the caller, the upstream provider and credential, the pacing wait and the priority
class are written by the middleware, authentication and the proxy and mutation views, and read by
the upstream headers, the priority stamp, the log line, the console's row and the ``x-request-id``
signal. Kept as six request keys they cost ~30 Python calls per proxied request (aiohttp's
``Request.__getitem__``/``__setitem__`` and ``Mapping.get``, whose miss raises a ``KeyError``); one
``__slots__`` object set once and read as attributes costs a handful.
"""

from __future__ import annotations

from aiohttp import web

from gateway.domain.objects import Principal


class Call:
    __slots__ = ("credential", "generated_id", "pacing_wait_ms", "principal", "priority", "provider", "request_id")

    def __init__(self, request_id: str, *, generated_id: bool) -> None:
        self.request_id = request_id
        self.generated_id = generated_id  # the gateway made the id (random hex: nothing to redact)
        self.principal: Principal | None = None  # set by authentication (``/v1/`` only)
        self.provider: str | None = None  # the upstream, for the log line
        self.credential = ""  # the credential the call went to, for the console's row
        self.pacing_wait_ms: float | None = None
        self.priority: str | None = None  # the class the request's upstream calls queued in

    def caller(self) -> Principal:
        """The authenticated caller; only views under ``/v1/`` (behind authentication) ask."""
        if self.principal is None:
            raise RuntimeError("no authenticated caller on this request")
        return self.principal


CALL = web.RequestKey("call", Call)
