"""Typed application state (``web.AppKey``): the one place the app's shared objects are named."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import Config
from gateway.domain.objects import Credential
from gateway.http.endpoints import Endpoint
from gateway.mutations.journal import Journal
from gateway.observability.metrics import Metrics
from gateway.observability.recent import Recent
from gateway.pacing.api import Pacer
from gateway.store.objects import Objects
from gateway.store.tokens import Tokens
from gateway.stream.service import Stream
from gateway.syncs.runner import SyncRunners
from gateway.upstream.client import UpstreamClient
from gateway.vault.crypto import Keyring

CONFIG = web.AppKey("config", Config)


@dataclass
class LiveConfig:
    """The config as last (re)loaded, for what a reload changes under running handlers (the provider catalog
    and limits the API checks credentials against); ``CONFIG`` stays the one the process started with."""

    current: Config


LIVE_CONFIG = web.AppKey("live_config", LiveConfig)
KEYRING = web.AppKey("keyring", Keyring)
METRICS = web.AppKey("metrics", Metrics)
ENGINE = web.AppKey("engine", AsyncEngine)
OBJECTS = web.AppKey("objects", Objects)
TOKENS = web.AppKey("tokens", Tokens)
STREAM = web.AppKey("stream", Stream)
ENDPOINTS = web.AppKey("endpoints", list[Endpoint])
UPSTREAM = web.AppKey("upstream", UpstreamClient)  # the one upstream client (opened in a cleanup context)
PACER = web.AppKey("pacer", Pacer)
JOURNAL = web.AppKey("journal", Journal)  # this replica's mutation journal (its lease, its running mutations)
SYNC_RUNNERS = web.AppKey("sync_runners", SyncRunners)
RECENT = web.AppKey("recent", Recent)  # this process's recent calls and per-credential rates (console)
# Optional hooks other capabilities install: pacing state for GET /v1/credentials/{id}, readiness checks.
PacingState = Callable[[Credential], Awaitable[dict[str, Any]]]
ReadyCheck = Callable[[], Awaitable[bool]]
PACING_STATE = web.AppKey[PacingState]("pacing_state")
READY_CHECKS = web.AppKey("ready_checks", dict[str, ReadyCheck])
# The tasks of the requests being served (the middleware keeps it), for the shutdown to cancel late ones.
IN_FLIGHT = web.AppKey("in_flight", set[asyncio.Task[object]])
