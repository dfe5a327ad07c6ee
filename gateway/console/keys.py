"""The console's typed app state, and the services the app hands it.

The console is a sibling of ``gateway.http`` (neither imports the other), so the app gives it the
very objects the Management API's views use instead of the console reaching into the API's keys:
one path to the data, named once here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.catalog import Catalog
from gateway.config import Config
from gateway.domain.objects import Credential
from gateway.observability.recent import Recent
from gateway.pacing.limits import EffectiveLimit
from gateway.store.objects import Objects
from gateway.store.sessions import Sessions
from gateway.store.tokens import Tokens
from gateway.syncs.runner import SyncRunners


class BadTokenBackoff(Protocol):
    """The API's per-address backoff for bad tokens (``AuthThrottle``): sign-in shares its table."""

    def check(self, address: str) -> None: ...  # raises ``RateLimited`` while the address is paused
    def failed(self, address: str) -> None: ...
    def succeeded(self, address: str) -> None: ...


@dataclass(frozen=True)
class Services:
    config: Config  # as the process started (console.*, read once)
    catalog: Callable[[], Catalog]  # the provider catalog as GET /v1/providers lists it now (a reload may add one)
    engine: AsyncEngine
    objects: Objects  # credentials, syncs, consumers: what /v1/credentials, /v1/syncs, /v1/consumers read
    tokens: Tokens  # what /v1/tokens reads and changes
    syncs: SyncRunners  # pause, resume, backfill: what POST /v1/syncs/{id}/pause|resume|backfill call
    recent: Recent  # this process's recent calls and per-credential rates
    describe: Callable[[Credential], Awaitable[dict[str, Any]]]  # the pacing state GET /v1/credentials/{id} shows
    limit: Callable[[Credential], EffectiveLimit]  # the limit the pacer applies: its windows and rules
    backoff: BadTokenBackoff  # the very table the API's authentication counts bad tokens in
    client_address: Callable[[web.Request], str]  # whose bad tokens they are, as the API tells it


SERVICES = web.AppKey("console_services", Services)
SESSIONS = web.AppKey("console_sessions", Sessions)


def services(request: web.Request) -> Services:
    return request.app[SERVICES]
