"""Running the gateway: ``gateway serve`` and the one-off store commands behind the CLI verbs.

``serve`` runs the app on an ``AppRunner``: ``/readyz`` turns ready only once the API port accepts;
on SIGTERM/SIGINT it stops accepting, lets in-flight requests finish for up to
``server.shutdown_timeout`` seconds, runs the cleanup contexts (workers, sessions, store) and
returns, so the process exits 0. Requests still running when that budget is spent are cancelled by
``_cut_late_requests``: aiohttp alone would wait as long again. With ``server.workers`` > 1 the CLI
runs gateway/supervisor.py instead, whose workers each run ``serve_worker`` (this same ``_serve``).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from typing import TypeVar

import structlog
from aiohttp import web

from gateway.app import create_app, readiness
from gateway.config import Config
from gateway.http import appkeys
from gateway.http.protocol import start_runner
from gateway.reload import Reloader
from gateway.runtime import WorkerRole, install_uvloop, pid_file, until_signalled
from gateway.vault.crypto import Keyring

log = structlog.get_logger(__name__)
T = TypeVar("T")
GC_YOUNG_THRESHOLD = 10_000  # allocations (net of frees) between young collections; Python's default is 700


def settle_heap() -> None:
    """Once started, take the process's long-lived objects out of the cyclic collector's reach.

    After startup ~120,000 objects (SQLAlchemy, pydantic, aiohttp, the app) live as long as the
    process; every full collection walked them all, ~60 ms each, about once a second at c=50: ~6%
    of the CPU and, as a pause, most of the p99. ``gc.freeze`` parks them for good; a larger first
    generation threshold lets short bursts of allocation (a request is freed by reference counting)
    go without a collection. Cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


def serve(config: Config, keyring: Keyring, *, demo: bool = False, config_path: str | None = None) -> int:
    """Run until SIGTERM/SIGINT, then drain within ``server.shutdown_timeout``; the exit code.

    ``config_path`` is what SIGHUP re-reads (None: ``$GATEWAY_CONFIG`` or the defaults).
    """
    install_uvloop()
    log.info(
        "starting",
        host=config.server.host,
        port=config.server.port,
        demo=demo,
        store="sqlite" if config.store.is_sqlite else "postgresql",
        pacing=config.pacing.backend,
    )
    with pid_file(config.server.pid_file):
        asyncio.run(_serve(config, keyring, demo=demo, config_path=config_path))
    log.info("stopped")
    return 0


def serve_worker(config: Config, keyring: Keyring, role: WorkerRole) -> None:
    """One of a supervisor's workers: the serving and drain of ``serve``, sharing the port with the others."""
    install_uvloop()
    asyncio.run(_serve(config, keyring, demo=False, worker=role, config_path=role.config_path))


async def _serve(
    config: Config, keyring: Keyring, *, demo: bool, config_path: str | None, worker: WorkerRole | None = None
) -> None:
    app = create_app(config, keyring=keyring, worker_socket=worker.ops_socket if worker else None)
    _cut_late_requests(app, config.server.shutdown_timeout)
    reloader: Reloader | None = None
    if demo:
        from gateway.sandbox.demo import install_demo

        install_demo(app)  # its key and store are throwaway: nothing to reload
    else:
        reloader = Reloader(app, config_path, config, worker=worker.index if worker else None)
        keyring.reread = reloader.read_keys
    checks = app[appkeys.READY_CHECKS]
    checks["accepting"] = readiness(False)  # ready only once the API port really accepts
    runner = await start_runner(app, config.server, shutdown_timeout=config.server.shutdown_timeout)
    settle_heap()
    try:
        # SO_REUSEPORT: the kernel spreads connections over the workers (or over an old and a new
        # process during a hand-over, when ``server.reuse_port`` is on).
        shared = worker is not None or config.server.reuse_port
        await web.TCPSite(runner, config.server.host, config.server.port, reuse_port=shared).start()
        checks["accepting"] = readiness(True)
        log.info("listening", url=f"http://{config.server.host}:{config.server.port}")
        await until_signalled(worker.parent_sentinel if worker else None, on_hangup=_reloading(reloader))
        log.info("draining", shutdown_timeout=config.server.shutdown_timeout)
    finally:
        await runner.cleanup()


def _reloading(reloader: Reloader | None) -> Callable[[], None] | None:
    """SIGHUP's handler: start a reload (they run one at a time) and keep a reference to it."""
    if reloader is None:
        return None
    running: set[asyncio.Task[bool]] = set()

    def start() -> None:
        task = asyncio.create_task(reloader.reload())
        running.add(task)
        task.add_done_callback(running.discard)

    return start


def _cut_late_requests(app: web.Application, timeout: float) -> None:
    """Cancel the requests still in flight ``timeout`` s after shutdown began, so the exit is on time.

    aiohttp waits ``shutdown_timeout`` for in-flight handlers and then, having "cancelled" them by
    failing their request body reads only, waits as long again: a handler awaiting its upstream or a
    consumer would hold the process for twice the budget, past the orchestrator's grace period. The
    gateway's middleware keeps the set of those requests' tasks (no middleware of its own here: one
    more layer per request on the hot path).
    """
    in_flight = app[appkeys.IN_FLIGHT]

    async def start_clock(_app: web.Application) -> None:
        def cut() -> None:
            for task in list(in_flight):
                task.cancel()

        asyncio.get_running_loop().call_later(timeout, cut)

    app.on_shutdown.append(start_clock)
