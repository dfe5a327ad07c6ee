"""Upstream answers as the rest of the gateway sees them, and the one mapping of transport failures.

``UpstreamResponse`` relays a body still on the wire (the proxy); ``UpstreamResult`` is a parsed JSON
exchange (mutations). ``mapped`` is the single place aiohttp/socket errors become gateway errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDictProxy

from gateway.domain.models import display_name
from gateway.egress import EgressDenied
from gateway.errors import GatewayError, RateLimited, UpstreamDenied, UpstreamTimeout, UpstreamUnavailable
from gateway.pacing.adaptive import is_refusal
from gateway.providers.base import Translator

RESULT_LIMIT = 64 * 1024 * 1024  # request_json bodies are parsed whole; bigger ones are not JSON APIs
CHUNK = 256 * 1024


@dataclass
class UpstreamResult:
    status: int
    headers: Mapping[str, str]
    body_json: Any
    pacing_wait: float = 0.0
    pause: float | None = None  # seconds the answer paused its bucket (its Retry-After, the penalty, ...)
    readable: bool = True  # False: a body was sent that is not JSON (``body_json`` is then None)


class Answer(Protocol):
    """What ``refusal`` reads of an answer (an ``UpstreamResult``, or the mutation service's view of one)."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def body_json(self) -> Any: ...
    @property
    def pause(self) -> float | None: ...


def refusal(translator: Translator, answer: Answer) -> GatewayError:
    """The provider's error for a non-2xx answer (a sync's page or a mutation's call); a 503 with
    ``Retry-After`` that paused the bucket is a throttle (``RateLimited`` for the pause it asked for), as a
    429 is, so the caller asks again only when the pause ends."""
    error = translator.error_for(answer.status, answer.headers, answer.body_json, answer.pause)
    if answer.pause is not None and not isinstance(error, RateLimited) and is_refusal(answer.status, answer.headers):
        return RateLimited(error.message, retry_after=answer.pause, **error.extra)
    return error


class UpstreamResponse:
    """An upstream answer whose body is still on the wire; ``chunks()`` relays it as it arrives."""

    def __init__(
        self,
        raw: aiohttp.ClientResponse,
        *,
        provider: str,
        pacing_wait: float,
        pause: float | None = None,
        head: bytes = b"",
    ) -> None:
        """``head``: the body's first bytes, already read off the wire (for the pacer): relayed first."""
        self._raw = raw
        self._head = head
        self._provider = provider
        self.status = raw.status
        self.headers: CIMultiDictProxy[str] = raw.headers
        self.pacing_wait = pacing_wait
        self.pause = pause

    async def next_chunk(self) -> bytes:
        """The next part of the body as it arrives (at most ``CHUNK`` bytes), ``b""`` once it is all read.

        The proxy relays with this one call per part: no async generator and aiohttp iterator around
        it, two frames resumed per part that a small answer paid for nothing.
        """
        if self._head:
            head, self._head = self._head, b""
            return head
        try:
            return await self._raw.content.read(CHUNK)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise mapped(exc, self._provider) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        while chunk := await self.next_chunk():
            yield chunk

    async def read(self, *, limit: int = RESULT_LIMIT) -> bytes:
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise UpstreamUnavailable(f"Error: {display_name(self._provider)} API answered over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


def mapped(exc: BaseException, provider: str) -> GatewayError:
    """The one translation of aiohttp/socket failures into the gateway's error tree."""
    name = display_name(provider)
    if isinstance(getattr(exc, "os_error", None), EgressDenied):
        return UpstreamDenied(
            f"Error: the {name} API's address is denied by the gateway's egress policy (upstream.deny/allow)"
        )
    if isinstance(exc, TimeoutError):  # aiohttp's ServerTimeoutError/ConnectionTimeoutError are TimeoutErrors
        return UpstreamTimeout(f"Error: {name} API timed out")
    reason = "TLS handshake failed" if isinstance(exc, aiohttp.ClientSSLError) else exc.__class__.__name__
    return UpstreamUnavailable(f"Error: {name} API is unreachable ({reason})")
