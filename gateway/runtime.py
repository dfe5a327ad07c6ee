"""What every gateway process needs, whether it serves alone or supervises workers.

``server.py`` (one process) and ``supervisor.py`` (N workers on one port) both build on this module
and neither imports the other: the CLI picks one, as uvicorn does.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import KEYS_ENV, Config
from gateway.errors import ConfigError, RotationRefused
from gateway.providers.capture import check_sync
from gateway.store.db import create_engine, ensure_schema, migrate
from gateway.store.objects import Objects
from gateway.store.replicas import Replicas
from gateway.store.tokens import Tokens
from gateway.vault.crypto import Keyring

log = structlog.get_logger(__name__)


def keyring_for(config: Config, *, allow_empty: bool = False) -> Keyring:
    keyring = Keyring.parse(config.encryption.key_text())
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
    index: int = 0  # this worker's number, on its log lines
    config_path: str | None = None  # what the worker re-reads on SIGHUP


async def until_signalled(
    closed_fd: int | None = None,
    *,
    on_hangup: Callable[[], None] | None = None,
    on_usr2: Callable[[], None] | None = None,
) -> None:
    """Return on SIGTERM or SIGINT, or once ``closed_fd`` turns readable (its other end closed).

    SIGHUP calls ``on_hangup`` (a reload), SIGUSR2 ``on_usr2`` (a restart), and waiting goes on;
    both are always handled, since their default action would end the process.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, on_hangup or (lambda: log.warning("reload_unavailable")))
    loop.add_signal_handler(
        signal.SIGUSR2,
        on_usr2 or (lambda: log.warning("restart_needs_workers", hint="one process restarts by hand-over")),
    )
    if closed_fd is not None:
        loop.add_reader(closed_fd, stop.set)
    try:
        await stop.wait()
    finally:
        if closed_fd is not None:
            loop.remove_reader(closed_fd)  # it stays readable: the callback would spin


@contextmanager
def pid_file(path: str | None) -> Iterator[None]:
    """Write this process's pid to ``path`` while it serves (``gateway reload``/``restart`` read it)."""
    if not path:
        yield
        return
    mine = f"{os.getpid()}\n"
    Path(path).write_text(mine, encoding="utf-8")
    try:
        yield
    finally:  # a hand-over's new process has written its own pid meanwhile: leave that one
        with suppress(OSError):
            if Path(path).read_text(encoding="utf-8") == mine:
                Path(path).unlink()


def signal_gateway(pid_file: str | None, pid: int | None, name: str) -> int:
    """``gateway reload``/``restart``: send ``name`` to ``pid`` or to the pid in ``server.pid_file``."""
    if pid is None:
        if not pid_file:
            raise ConfigError("server.pid_file: not set; give --pid or set server.pid_file for the running gateway")
        try:
            pid = int(Path(pid_file).read_text(encoding="utf-8").strip())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"server.pid_file: cannot read a pid from {pid_file}: {exc}") from None
    try:
        if not _serves(pid):  # a stale pid file or a mistyped --pid must not signal another program
            raise ProcessLookupError
        os.kill(pid, getattr(signal, name))
    except ProcessLookupError:
        raise ConfigError(f"no gateway runs with pid {pid}") from None
    print(f"sent {name} to {pid}; the gateway's log says what it applied", file=sys.stderr)
    return 0


def _serves(pid: int) -> bool:
    """Whether ``pid`` runs ``gateway serve`` (``gateway``, or ``python -m gateway``), by its command line.

    Without ``/proc`` (not Linux) the pid is trusted as given.
    """
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return not Path("/proc/self").exists()
    entry = any(Path(a).name == "gateway" for a in argv) or ("-m", "gateway") in itertools.pairwise(argv)
    return entry and "serve" in argv


async def check_replicas_hold(engine: AsyncEngine, key_id: str, *, force: bool) -> None:
    """Refuse a rotation while a live replica lacks ``key_id``: it could not open what rotate writes."""
    lacking = [r for r in await Replicas(engine).live() if key_id not in r.key_ids]
    if not lacking:
        return
    named = ", ".join(f"{r.id} (holds {r.key_ids})" for r in lacking)
    if force:
        print(f"--force: rotating although these replicas lack key {key_id!r}: {named}", file=sys.stderr)
        return
    raise RotationRefused(
        f"live replica(s) do not hold key {key_id!r} yet: {named}. Add the key to their encryption.keys and "
        "reload them (`gateway reload`), then rotate again; or pass --force"
    )


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
