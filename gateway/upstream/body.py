"""Request bodies on their way upstream: small ones buffered (so they can be replayed), the rest streamed.

A streamed body is an async iterator over the client's socket, so the upstream write pulls chunks
only as fast as the upstream accepts them and aiohttp stops reading the client meanwhile:
back-pressure both ways, nothing held whole. The iterator enforces the size limit and the gap
between chunks as it goes; when it fails it records why in ``failure``, because aiohttp wraps the
exception of a failed upload into a generic connection error and the client needs the real reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import StreamReader

from gateway.errors import GatewayError, InvalidRequest, PayloadTooLarge, RequestTimeout

REPLAYABLE_BYTES = 1024 * 1024  # SPEC.md Pacing: bodies up to 1 MiB are held so a 429 can be retried


class StreamedBody:
    """The client's body as it arrives; iterate it once."""

    def __init__(self, reader: StreamReader, *, limit: int, read_timeout: float) -> None:
        self._reader = reader
        self._limit = limit
        self._read_timeout = read_timeout
        self.failure: GatewayError | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        size = 0
        while True:
            chunk = await self._next()
            if not chunk:
                return
            size += len(chunk)
            if self._limit and size > self._limit:
                self.failure = PayloadTooLarge(f"request body is over the limit of {self._limit} bytes")
                raise self.failure
            yield chunk

    async def _next(self) -> bytes:
        try:
            buffered = self._reader.read_nowait()  # at full speed the data is already here: no timer
            if buffered or self._reader.at_eof():
                return buffered
            async with asyncio.timeout(self._read_timeout):
                return await self._reader.readany()
        except TimeoutError:
            self.failure = RequestTimeout(
                f"request body: no data from the client for {self._read_timeout:g} s (the read timeout)"
            )
        except Exception as exc:  # the client went away mid-body; whatever aiohttp raised, say so plainly
            self.failure = InvalidRequest(f"request body ended abruptly ({exc.__class__.__name__})")
        raise self.failure


async def read_small(reader: StreamReader, *, length: int, read_timeout: float) -> bytes:
    """A body whose Content-Length is at most ``REPLAYABLE_BYTES``, read whole so it can be resent."""
    body = StreamedBody(reader, limit=length, read_timeout=read_timeout)
    data = b"".join([chunk async for chunk in body])
    if len(data) != length:
        raise InvalidRequest(f"request body: got {len(data)} bytes, Content-Length said {length}")
    return data
