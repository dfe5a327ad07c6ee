"""Request bodies on their way upstream: small ones buffered (so they can be replayed), the rest streamed.

A streamed body is an async iterator over the client's socket, so the upstream write pulls chunks
only as fast as the upstream accepts them and aiohttp stops reading the client meanwhile:
back-pressure both ways, nothing held whole. The iterator enforces the size limit and the gap
between chunks as it goes; when it fails it records why in ``failure``, because aiohttp wraps the
exception of a failed upload into a generic connection error and the client needs the real reason.

Slow clients (issue 12): a streamed body is read ahead (``prefetch``, up to ``REPLAYABLE_BYTES``)
*before* pacing, so a client that sends its head and then dawdles holds no pacing slot; once the
upstream call has its slot, the time spent waiting for the client is bounded by ``ReadBudget``
(the idle gap and a minimum average rate), so the slot is held at most ``grace + bytes/min_rate``
seconds of client slowness. Time the *upstream* takes to accept bytes is not counted against the
client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import StreamReader

from gateway.errors import GatewayError, InvalidRequest, PayloadTooLarge, RequestTimeout

REPLAYABLE_BYTES = 1024 * 1024  # SPEC.md Pacing: bodies up to 1 MiB are held so a 429 can be retried


class ReadBudget:
    """How long the next read may wait: within the idle gap, and within ``grace + received/min_rate``
    seconds of waiting in all (Apache's ``MinRate``: each ``min_rate`` bytes buy one more second).

    Only time spent waiting for the client counts, so a client is never blamed for the upstream's
    back-pressure. ``min_rate`` 0: the idle gap is the only bound.
    """

    def __init__(self, *, idle: float, min_rate: float) -> None:
        self.idle = idle
        self.min_rate = min_rate
        self.received = 0
        self.waited = 0.0

    def timeout(self) -> tuple[float, bool]:
        """(seconds the next wait may last, whether the rate bound, not the idle gap, is what ends it)."""
        if not self.min_rate:
            return self.idle, False
        left = self.idle + self.received / self.min_rate - self.waited
        return (left, True) if left < self.idle else (self.idle, False)

    def failure(self, by_rate: bool) -> RequestTimeout:
        if by_rate:
            return RequestTimeout(
                f"request body: slower than {self.min_rate:g} bytes/s on average (server.min_body_rate)"
            )
        return RequestTimeout(f"request body: no data from the client for {self.idle:g} s (the read timeout)")


class StreamedBody:
    """The client's body as it arrives; iterate it once (``prefetch`` first, optionally)."""

    def __init__(self, reader: StreamReader, *, limit: int, read_timeout: float, min_rate: float = 0.0) -> None:
        self._reader = reader
        self._limit = limit
        self._budget = ReadBudget(idle=read_timeout, min_rate=min_rate)
        self._head: list[bytes] = []
        self._size = 0
        self._ended = False
        self.failure: GatewayError | None = None

    async def prefetch(self, size: int) -> None:
        """Read the first ``size`` bytes (or the whole body, if shorter) now: before the call is paced,
        so the client's slowness over them costs no pacing slot and no upstream connection."""
        while self._size < size and not self._ended:
            chunk = await self._checked_next()
            if chunk:
                self._head.append(chunk)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        head, self._head = self._head, []
        for chunk in head:
            yield chunk
        # From here the upstream call holds its slot: the client's budget starts afresh, so credit
        # banked by a fast prefetch cannot be spent dawdling now.
        self._budget = ReadBudget(idle=self._budget.idle, min_rate=self._budget.min_rate)
        while not self._ended:
            chunk = await self._checked_next()
            if chunk:
                yield chunk

    async def _checked_next(self) -> bytes:
        chunk = await self._next()
        if not chunk:
            self._ended = True
            return chunk
        self._size += len(chunk)
        self._budget.received += len(chunk)
        if self._limit and self._size > self._limit:
            self.failure = PayloadTooLarge(f"request body is over the limit of {self._limit} bytes")
            raise self.failure
        return chunk

    async def _next(self) -> bytes:
        try:
            buffered = self._reader.read_nowait()  # at full speed the data is already here: no timer
            if buffered or self._reader.at_eof():
                return buffered
            timeout, by_rate = self._budget.timeout()
            loop = asyncio.get_running_loop()
            began = loop.time()
            try:
                async with asyncio.timeout(max(0.0, timeout)):
                    return await self._reader.readany()
            finally:
                self._budget.waited += loop.time() - began
        except TimeoutError:
            self.failure = self._budget.failure(by_rate)
        except Exception as exc:  # the client went away mid-body; whatever aiohttp raised, say so plainly
            self.failure = InvalidRequest(f"request body ended abruptly ({exc.__class__.__name__})", field="body")
        raise self.failure


async def read_whole(reader: StreamReader, *, limit: int, read_timeout: float, min_rate: float) -> bytes:
    """A body read whole, within ``limit`` bytes (0: no limit) and the client's read budget."""
    body = StreamedBody(reader, limit=limit, read_timeout=read_timeout, min_rate=min_rate)
    return b"".join([chunk async for chunk in body])


async def read_small(reader: StreamReader, *, length: int, read_timeout: float, min_rate: float) -> bytes:
    """A body whose Content-Length is at most ``REPLAYABLE_BYTES``, read whole so it can be resent."""
    data = await read_whole(reader, limit=length, read_timeout=read_timeout, min_rate=min_rate)
    if len(data) != length:
        raise InvalidRequest(f"request body: got {len(data)} bytes, Content-Length said {length}", field="body")
    return data
