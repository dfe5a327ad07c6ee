"""The three helpers every kind of test needs: a deadline poll, a free port and a fake clock."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable


async def poll(what: str, check: Callable[[], bool | Awaitable[bool]], deadline: float = 10) -> None:
    """Re-check ``check`` (plain or async) until it holds; fail naming ``what`` after ``deadline`` s."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() >= end:
            raise AssertionError(f"{what} within {deadline}s")
        await asyncio.sleep(0.02)  # poll interval, not a wait for the condition


def free_port() -> int:
    """A loopback port nothing listens on now (never a default port such as 8080 or 9091)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FakeClock:
    """A clock that moves only when the test says so: ``clock()`` reads it, ``clock.now += s`` moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
