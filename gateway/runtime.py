"""What every gateway process needs, whether it serves alone or supervises workers.

``server.py`` (one process) and ``supervisor.py`` (N workers on one port) both build on this module
and neither imports the other: the CLI picks one, as uvicorn does.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gateway.config import KEYS_ENV, Config
from gateway.errors import ConfigError
from gateway.providers.capture import check_sync
from gateway.store.db import create_engine, ensure_schema, migrate
from gateway.store.objects import Objects
from gateway.store.tokens import Tokens
from gateway.vault.crypto import Keyring


def keyring_for(config: Config, *, allow_empty: bool = False) -> Keyring:
    keyring = Keyring.parse(config.encryption.keys)
    if not keyring.keys and not allow_empty:
        raise ConfigError(
            "encryption.keys: no encryption key configured; create one and export it: "
            f"`export {KEYS_ENV}=$(gateway keys generate)` (or run `gateway serve --demo` to try it out)"
        )
    return keyring


def install_uvloop() -> None:
    """Use uvloop when it is installed (the ``speed`` extra); asyncio's loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


@dataclass(frozen=True)
class WorkerRole:
    """What changes when ``_serve`` runs as one of a supervisor's workers (see gateway/supervisor.py)."""

    ops_socket: str  # health, readiness and metrics for the supervisor, instead of the metrics listener
    parent_sentinel: int  # readable once the supervisor is gone: then drain, rather than outlive it


async def until_signalled(closed_fd: int | None = None) -> None:
    """Return on SIGTERM or SIGINT, or once ``closed_fd`` turns readable (its other end closed)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if closed_fd is not None:
        loop.add_reader(closed_fd, stop.set)
    try:
        await stop.wait()
    finally:
        if closed_fd is not None:
            loop.remove_reader(closed_fd)  # it stays readable: the callback would spin


@asynccontextmanager
async def store_session(config: Config, keyring: Keyring) -> AsyncIterator[tuple[Objects, Tokens]]:
    """The store for a one-off CLI verb: migrated (or checked), then disposed."""
    engine = create_engine(config.store)
    try:
        await ensure_schema(engine, config.store)
        yield Objects(engine, keyring, collection_check=check_sync), Tokens(engine)
    finally:
        await engine.dispose()


async def run_migrations(config: Config) -> None:
    engine = create_engine(config.store)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
