"""Fixtures for the sandbox tests: a running sandbox and a client session, closed after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.sandbox import SANDBOX, SandboxState, run_sandbox


@dataclass
class Running:
    """A sandbox on loopback: its URL, its state and a session with the auth headers preset."""

    url: str
    state: SandboxState
    http: aiohttp.ClientSession

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.http.request(method, self.url + path, **kwargs)


Start = Callable[..., Awaitable[Running]]


@pytest.fixture
async def sandbox() -> AsyncIterator[Start]:
    """``await sandbox(app, headers={...})`` starts ``app`` and returns a ``Running``."""
    async with AsyncExitStack() as stack:

        async def start(app: web.Application, headers: dict[str, str] | None = None) -> Running:
            url = await stack.enter_async_context(run_sandbox(app))
            http = await stack.enter_async_context(aiohttp.ClientSession(headers=headers or {}))
            return Running(url, app[SANDBOX], http)

        yield start
