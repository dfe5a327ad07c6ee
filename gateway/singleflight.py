"""Single flight: concurrent loads of one key share the first caller's answer (or error).

Short-TTL caches on the hot path (API tokens, credentials) expire under load with every in-flight
request missing at once; without this each one would read (and decrypt) the same store row, and at
50 concurrent requests that stalled the event loop for tens of milliseconds every TTL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")


class SingleFlight:
    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Future[Any]] = {}

    async def run(self, key: str, load: Callable[[], Awaitable[T]]) -> T:
        """``await load()``, or join the load of ``key`` already running. A waiter that gives up
        (cancelled) does not cancel the shared load, which the others still wait for."""
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(load())
            pending.add_done_callback(lambda done: self._finished(key, done))
        return cast(T, await asyncio.shield(pending))

    def _finished(self, key: str, done: asyncio.Future[Any]) -> None:
        if self._pending.get(key) is done:
            del self._pending[key]
        if not done.cancelled():
            done.exception()  # retrieved, so an error whose waiters all left is not reported as lost
