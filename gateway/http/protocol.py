"""Requests that aiohttp's HTTP parser refuses still get SPEC.md's JSON error and one redacted log line.

A method outside HTTP's grammar, a control character in a header, a malformed ``Content-Length``:
aiohttp answers these itself, before the application and its middleware see a request, with a
plain-text body that quotes the offending bytes, and logs the parser's traceback through the standard
library logger, again with those bytes (the quoted line may be an ``Authorization`` header). The
connection handler below answers them like every other bad input instead: the JSON body of
``gateway.errors``, the parser's reason without the bytes, a ``bad_http_request`` warning line.

The hook into aiohttp's connection handler is ``gateway.aiohttp_compat.answer_parser_errors``.

The same server guards every listener against slow and numerous clients (``start_runner``):

* a request head must arrive within ``server.header_timeout`` of the connection opening or of the
  previous response: aiohttp's keep-alive timer, armed at connect and re-armed after each response,
  closes a connection whose handler is still waiting for a complete head (a client sending a byte a
  second never completes one), and is exactly that timeout;
* past ``server.max_connections`` open connections a new one gets a fixed 503 and is closed, before
  any parsing, so a flood of idle sockets cannot starve the process of file descriptors.

Body gaps are bounded where bodies are read (``server.body_idle_timeout``, see http/bodies.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import HttpVersion11, hdrs, web

from gateway.aiohttp_compat import answer_parser_errors
from gateway.config import ServerConfig
from gateway.errors import GatewayError, InternalError, InvalidRequest, Overloaded, PayloadTooLarge
from gateway.http.fastpath import route_proxy_first
from gateway.http.middlewares import error_response

log = structlog.get_logger(__name__)


# Request bodies are read as the client sent them: a proxied gzip body goes upstream still encoded (aiohttp
# decoded it, and it no longer matched its Content-Length: a 400); JSON APIs refuse encoded bodies (bodies.py).
SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False}


def serve_json_errors(runner: web.BaseRunner, *, max_connections: int = 0) -> None:
    """Call after ``runner.setup()``: connections accepted from then on answer parser errors in JSON,
    and past ``max_connections`` (0 = no cap) get a 503."""
    answer_parser_errors(runner, _json_error, max_connections=max_connections, refusal=_TOO_MANY)
    assert runner.server is not None  # answer_parser_errors refuses a runner that was not set up
    runner.server.request_handler = _refusing_unknown_expectations(runner.server.request_handler)


def _refusing_unknown_expectations(
    handle: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
    """An ``Expect`` other than ``100-continue`` gets the JSON 400 naming the header.

    aiohttp checks ``Expect`` after routing but before any middleware, and answers an unknown one with a
    plain-text 417 that quotes the header's value; RFC 9110 lets a server refuse it with any 4xx.
    """

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        expect = request.headers.get(hdrs.EXPECT)
        if expect is not None and request.version >= HttpVersion11 and expect.lower() != "100-continue":
            log.warning("bad_http_request", status=400, reason="unknown Expect")
            return error_response(InvalidRequest("Expect: only 100-continue is supported", field="Expect"))
        return await handle(request)

    return answer


async def start_runner(app: web.Application, limits: ServerConfig, **kwargs: Any) -> web.AppRunner:
    """A set-up runner guarded as every gateway listener is: JSON errors, header timeout, connection cap;
    proxy calls dispatched first (http/fastpath.py)."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.header_timeout, **SERVER_OPTIONS, **kwargs)
    await runner.setup()
    serve_json_errors(runner, max_connections=limits.max_connections)
    route_proxy_first(runner)
    return runner


def _too_many() -> bytes:
    """The whole 503 answer, built once: it is written before any parsing, without a request object."""
    error = Overloaded("too many open connections (server.max_connections); retry shortly")
    body = json.dumps(error.body()).encode()
    headers = "".join(f"{name}: {value}\r\n" for name, value in error.headers().items())
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
        f"{headers}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_TOO_MANY = _too_many()


def _json_error(status: int, exc: BaseException | None) -> web.StreamResponse:
    error = _error_for(status, exc)
    if error.status >= 500:
        log.error("unhandled_error", exc_info=exc)
    else:
        log.warning("bad_http_request", status=error.status, reason=error.message)
    response = error_response(error)
    response.force_close()
    return response


def _error_for(status: int, exc: BaseException | None) -> GatewayError:
    if status >= 500:
        return InternalError("internal error; see the gateway log")
    reason = _reason(exc)
    if status == 413:
        return PayloadTooLarge(f"malformed HTTP request: {reason}")
    return InvalidRequest(f"malformed HTTP request: {reason}")


def _reason(exc: BaseException | None) -> str:
    """The parser's sentence (``Invalid header value char``) without the request bytes it quotes.

    aiohttp's messages put those after a colon (``... when reading: b'Bearer ...'``) or in quotes
    (``Bad status line 'GET ...'``): everything from the first of either is dropped.
    """
    text = str(getattr(exc, "message", "") or "").strip()
    first = _QUOTED.split(text.splitlines()[0], 1)[0].strip() if text else ""
    return first or "the request could not be parsed"


_QUOTED = re.compile(r""":|\s(?:b|bytearray\()?['"]""")
