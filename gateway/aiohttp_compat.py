"""Every place the gateway reaches past aiohttp's public API, each with the reason it must.

Re-check these four on every aiohttp upgrade (tests/http/test_proxy.py covers them); nothing else in
the gateway touches aiohttp internals.

1. ``PassThroughRequest`` (client side): the proxy forwards the client's headers and no others, and
   ``skip_auto_headers`` rebuilt its skip set on every call (~5% of the proxy's CPU at c=50).
2. ``BufferedHeadResponse`` (server side): a small relayed answer goes out in one socket write with
   its head, as ``web.Response`` does, instead of three (head, body, end).
3. ``answer_parser_errors`` (server side): requests aiohttp's parser refuses never reach a middleware;
   aiohttp answers them in plain text quoting the offending bytes (maybe an ``Authorization``
   header). The hook lets the gateway answer them like every other bad input. The same server
   subclass caps the open connections (``connection_made``), before any byte is parsed.
4. ``handle_before_app`` and ``set_match_info`` (server side): the proxy routes are dispatched
   without the router's walk and the middleware wrapper (gateway/http/fastpath.py); aiohttp has no
   public hook in front of the application, and a view needs its match info set as the router does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_urldispatcher import UrlMappingMatchInfo
from multidict import CIMultiDict

# Headers aiohttp would add on its own; a proxy forwards the client's, or none.
_NO_AUTO_HEADERS: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
)
ParserErrorAnswer = Callable[[int, BaseException | None], web.StreamResponse]
Dispatch = Callable[[web.Request], Awaitable[web.StreamResponse]]


class PassThroughRequest(aiohttp.ClientRequest):
    """A client request to which aiohttp adds no header of its own; the skip set is built once."""

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        self._skip_auto_headers = _NO_AUTO_HEADERS


class BufferedHeadResponse(web.StreamResponse):
    """A response whose head waits for the first body write (aiohttp's buffered-head mode).

    Only for answers known to be small: a streamed or long answer must show its head at once.
    """

    _send_headers_immediately = False


def answer_parser_errors(
    runner: web.BaseRunner, answer: ParserErrorAnswer, *, max_connections: int = 0, refusal: bytes = b""
) -> None:
    """Call after ``runner.setup()``: parser errors on connections accepted from then on get ``answer``,
    and a connection past ``max_connections`` open ones (0 = no cap) gets ``refusal`` and is closed.

    aiohttp builds one ``RequestHandler`` per connection inside its ``Server``; the server is made to
    build a subclass (same slots) whose only change is ``handle_error``.
    """

    class Handler(RequestHandler):
        __slots__ = ()

        def handle_error(
            self,
            request: web.BaseRequest,
            status: int = 500,
            exc: BaseException | None = None,
            message: str | None = None,
        ) -> web.StreamResponse:
            if request.writer.output_size > 0:  # the head went out already: only closing is left, as aiohttp does
                raise ConnectionError("the response was already started; cannot send an error body")
            return answer(status, exc)

    class Server(web.Server):
        def __call__(self) -> RequestHandler:
            handler = super().__call__()
            handler.__class__ = Handler
            return handler

        def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
            super().connection_made(handler, transport)
            if max_connections and len(self._connections) > max_connections:
                transport.write(refusal)
                transport.close()

    server = runner.server
    if server is None:
        raise RuntimeError("answer_parser_errors() needs a runner that was set up")
    server.__class__ = Server


def handle_before_app(runner: web.BaseRunner, wrap: Callable[[Dispatch], Dispatch]) -> None:
    """Call after ``runner.setup()``: connections accepted from then on hand each request to
    ``wrap(application's handler)`` instead (aiohttp's ``Server`` keeps the handler it gives every
    new connection in ``request_handler``; an ``AppRunner``'s requests are ``web.Request``)."""
    server = runner.server
    if server is None:
        raise RuntimeError("handle_before_app() needs a runner that was set up")
    server.request_handler = cast(Any, wrap(cast(Dispatch, server.request_handler)))


def set_match_info(request: web.Request, match_info: UrlMappingMatchInfo) -> None:
    """What ``Application._handle`` does with the router's answer: the request's ``match_info``."""
    request._match_info = match_info
