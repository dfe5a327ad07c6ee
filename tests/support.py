"""The helpers every kind of test needs: a deadline poll, a free port, a fake clock, a metrics scrape."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


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


def scrape(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """One sample as ``/metrics`` shows it (the exposition text, parsed); 0 when it is not there yet."""
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
