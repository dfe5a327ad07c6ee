"""Requests that aiohttp's HTTP parser refuses still get SPEC.md's JSON error and one redacted log line.

A method outside HTTP's grammar, a control character in a header, a malformed ``Content-Length``:
aiohttp answers these itself, before the application and its middleware see a request, with a
plain-text body that quotes the offending bytes, and logs the parser's traceback through the standard
library logger, again with those bytes (the quoted line may be an ``Authorization`` header). The
connection handler below answers them like every other bad input instead: the JSON body of
``gateway.errors``, the parser's reason without the bytes, a ``bad_http_request`` warning line.

The hook into aiohttp's connection handler is ``gateway.aiohttp_compat.answer_parser_errors``.
"""

from __future__ import annotations

import re

import structlog
from aiohttp import web

from gateway.aiohttp_compat import answer_parser_errors
from gateway.errors import GatewayError, InternalError, InvalidRequest, PayloadTooLarge
from gateway.http.middlewares import error_response

log = structlog.get_logger(__name__)


def serve_json_errors(runner: web.BaseRunner) -> None:
    """Call after ``runner.setup()``: connections accepted from then on answer parser errors in JSON."""
    answer_parser_errors(runner, _json_error)


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
