"""``gateway serve`` with ``server.workers`` > 1: N worker processes accepting on one port, one supervisor.

Workers are replicas (SPEC.md "Scaling out") that share a host and a port: they cooperate only
through PostgreSQL and the Redis pacing backend, which the config validation requires. The supervisor
adds what one process did for itself:

- it prepares the store once (schema check or migration, the config's declared objects), so workers
  race neither on migrations nor on upserts;
- it starts every worker as a fresh interpreter ("spawn"): prometheus_client chooses its multiprocess
  value store at import, so a worker must import it with ``PROMETHEUS_MULTIPROC_DIR`` already set;
- it owns the metrics listener: ``/metrics`` adds up the workers' metric files, ``/readyz`` asks every
  worker's own ``/readyz`` over a Unix socket in the supervisor's directory, ``/healthz`` answers while
  the supervisor runs;
- it restarts a worker that exits unasked, waiting longer after each quick exit; on SIGTERM/SIGINT it
  turns not ready, forwards SIGTERM (each worker drains as one process does), waits up to
  ``server.shutdown_timeout`` plus a margin and kills the stragglers.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.process import BaseProcess
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from gateway.config import Config, load_config
from gateway.errors import ConfigError, GatewayError
from gateway.http import appkeys, ops
from gateway.http.middlewares import json_errors
from gateway.http.protocol import start_runner
from gateway.observability.logs import configure_logging
from gateway.runtime import WorkerRole, pid_file, store_session, until_signalled
from gateway.store.declared import declare_objects
from gateway.vault.crypto import Keyring

log = structlog.get_logger(__name__)
SPAWN = multiprocessing.get_context("spawn")
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
READY_TIMEOUT = 1.0  # seconds a worker gets to answer the supervisor's readiness question
RESTART_READY_DEADLINE = 60.0  # seconds a restarted worker gets to import, connect and accept
DRAIN_MARGIN = 5.0  # seconds beyond shutdown_timeout for a worker to close its store, Redis and exit
FIRST_BACKOFF, MAX_BACKOFF = 0.5, 15.0  # seconds before a restart; doubled after each quick exit
STEADY = 60.0  # seconds a worker must have lived for its exit to count as a fresh incident
# A worker the forwarded SIGTERM killed outright had no handler for it: it was still starting (nothing in
# flight yet) or had already drained on a SIGINT of its own (Ctrl-C reaches the whole process group).
CLEAN_EXITS = frozenset({0, -signal.SIGTERM})
Worker = Callable[[Config, Keyring, WorkerRole], None]  # one worker process's serving, until it drains


def supervise(config: Config, keyring: Keyring, *, worker: Worker, config_path: str | None = None) -> int:
    """Run ``worker`` in N processes until SIGTERM/SIGINT; 0 when every one then drained and exited cleanly.

    ``worker`` (the CLI passes ``server.serve_worker``) must be a module-level function: each spawned
    process receives it by name.
    """
    log.info(
        "starting",
        host=config.server.host,
        port=config.server.port,
        workers=config.server.workers,
        store="postgresql",
        pacing=config.pacing.backend,
    )
    with pid_file(config.server.pid_file):
        code = asyncio.run(_supervise(config, keyring, worker, config_path))
    log.info("stopped", exit_code=code)
    return code


async def _supervise(config: Config, keyring: Keyring, worker: Worker, config_path: str | None) -> int:
    await _check_port(config)
    async with store_session(config, keyring) as (objects, _tokens):
        await declare_objects(config, objects)
    with _workdir() as workdir:
        supervisor = Supervisor(config, keyring, workdir, worker, config_path)
        async with supervisor.running():
            await until_signalled(on_hangup=supervisor.reload_workers, on_usr2=supervisor.restart_soon)
            return await supervisor.drain()


async def _check_port(config: Config) -> None:
    """Fail now, naming the cause, when the API port cannot be bound, rather than let workers crash-loop."""
    probe = await asyncio.get_running_loop().create_server(
        asyncio.Protocol, config.server.host, config.server.port, reuse_port=True
    )
    probe.close()
    await probe.wait_closed()


@contextmanager
def _workdir() -> Iterator[Path]:
    """The workers' Unix sockets and metric files; the workers inherit it as ``PROMETHEUS_MULTIPROC_DIR``."""
    path = Path(tempfile.mkdtemp(prefix="gateway-workers-"))
    os.environ[MULTIPROC_DIR] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_DIR, None)
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Slot:
    """Worker number ``index``: whichever process currently fills it, and how to ask it if it is ready."""

    index: int
    socket: str
    process: BaseProcess | None = None
    pid: int = 0
    session: aiohttp.ClientSession | None = field(default=None, repr=False)
    successor: BaseProcess | None = None  # started by a restart, ready, adopted when ``process`` exits


class Supervisor:
    def __init__(
        self, config: Config, keyring: Keyring, workdir: Path, worker: Worker, config_path: str | None = None
    ) -> None:
        self.config, self.keyring, self.workdir, self.worker = config, keyring, workdir, worker
        self.config_path = config_path
        self.generation = 0  # numbers the Unix sockets of restarted workers
        self.restarting: asyncio.Task[None] | None = None
        self.slots = [Slot(i, str(workdir / f"worker-{i}.sock")) for i in range(config.server.workers)]
        self.draining = asyncio.Event()
        self.keepers: list[asyncio.Task[int | None]] = []
        self.registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(self.registry, path=str(workdir))  # type: ignore[no-untyped-call]

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The metrics listener, then the workers; on the way out anything still alive is killed."""
        runner = await start_runner(self._ops_app(), self.config.server)
        try:
            await web.TCPSite(runner, self.config.metrics.host, self.config.metrics.port).start()
            for slot in self.slots:
                slot.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=slot.socket))
            self.keepers = [asyncio.create_task(self._keep(slot)) for slot in self.slots]
            yield
        finally:
            for slot in self.slots:
                for process in (slot.process, slot.successor):
                    if process is not None:
                        process.kill()
            for keeper in self.keepers:
                keeper.cancel()
            await asyncio.gather(*self.keepers, return_exceptions=True)
            for slot in self.slots:
                if slot.session is not None:
                    await slot.session.close()
            await runner.cleanup()

    async def drain(self) -> int:
        """Forward SIGTERM, wait for the workers' own drains, kill what outlives them; the exit code."""
        self.draining.set()
        log.info("draining", shutdown_timeout=self.config.server.shutdown_timeout)
        for slot in self.slots:
            for process in (slot.process, slot.successor):
                if process is not None:
                    process.terminate()
        _, late = await asyncio.wait(self.keepers, timeout=self.config.server.shutdown_timeout + DRAIN_MARGIN)
        for slot in self.slots:
            if slot.process is not None:
                log.warning("worker_killed", worker=slot.index, pid=slot.pid)
                slot.process.kill()
        codes = await asyncio.gather(*self.keepers)
        return 0 if not late and all(code in CLEAN_EXITS for code in codes if code is not None) else 1

    async def _keep(self, slot: Slot) -> int | None:
        """Keep a worker in ``slot`` until the drain; the exit code of the one the drain stopped, if any."""
        backoff = FIRST_BACKOFF
        while True:
            started = time.monotonic()
            code = await self._run(slot)
            if self.draining.is_set():
                log.info("worker_exited", worker=slot.index, pid=slot.pid, exit_code=code)
                return code
            if slot.successor is not None:
                log.info("worker_replaced", worker=slot.index, exit_code=code, successor=slot.successor.pid)
                continue
            if time.monotonic() - started >= STEADY:
                backoff = FIRST_BACKOFF
            log.warning("worker_exited", worker=slot.index, pid=slot.pid, exit_code=code, restart_in=backoff)
            with suppress(TimeoutError):
                await asyncio.wait_for(self.draining.wait(), backoff)
                return None  # the drain began during the backoff: nothing left to stop
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _run(self, slot: Slot) -> int:
        """Run a worker in ``slot`` (a restart's successor, else a new one) until it exits; its exit code."""
        process = slot.successor or self._spawn(slot.index, slot.socket)
        slot.successor = None
        slot.process, slot.pid = process, process.pid or 0
        try:
            await _exited(process)
        finally:
            slot.process = None
        code, pid = process.exitcode, process.pid
        assert code is not None  # _exited joined it
        process.close()
        # Its live gauges leave the sums; its counters stay in them. (prometheus_client has no hints here.)
        multiprocess.mark_process_dead(pid, str(self.workdir))  # type: ignore[no-untyped-call]
        return code

    def _spawn(self, index: int, ops_socket: str) -> BaseProcess:
        Path(ops_socket).unlink(missing_ok=True)  # a killed worker leaves its socket behind
        process = SPAWN.Process(
            target=_worker_main,
            args=(self.worker, self.config, self.keyring, index, ops_socket, self.config_path),
            name=f"gateway-worker-{index}",
            daemon=True,  # should the supervisor fail, multiprocessing's exit handler still stops its workers
        )
        process.start()
        log.info("worker_started", worker=index, pid=process.pid)
        return process

    async def restart_workers(self) -> None:
        """SIGUSR2 (``gateway restart``): slot by slot, a successor starts on the shared port (with the
        config file as it is now, and the code on disk) and is ready before its predecessor drains,
        so the port never stops accepting and in-flight requests finish."""
        try:
            self.config, self.keyring = self._reread()
        except GatewayError as exc:
            log.error("restart_refused", reason=exc.message)
            return
        for slot in self.slots:
            if self.draining.is_set():
                return
            if slot.process is not None and not await self._hand_over(slot):
                return
        log.info("restarted", workers=len(self.slots))

    def _reread(self) -> tuple[Config, Keyring]:
        """The config file as it is now; listeners stay as they are (the supervisor holds them)."""
        new = load_config(self.config_path)
        keyring = Keyring.parse(new.encryption.key_text())
        if not keyring.keys:
            raise ConfigError("encryption.keys: the new config has no encryption key")
        return new.model_copy(update={"server": self.config.server, "metrics": self.config.metrics}), keyring

    async def _hand_over(self, slot: Slot) -> bool:
        """Start ``slot``'s successor, wait until it is ready, then let the predecessor drain."""
        self.generation += 1
        socket = str(self.workdir / f"worker-{slot.index}-{self.generation}.sock")
        successor = self._spawn(slot.index, socket)
        session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket))
        if not await _ready_within(session, RESTART_READY_DEADLINE):
            log.error("restart_failed", worker=slot.index, reason="the successor did not become ready")
            successor.kill()
            await session.close()
            return False
        previous, old_session = slot.process, slot.session
        slot.successor, slot.socket, slot.session = successor, socket, session
        if previous is not None:
            previous.terminate()  # it drains; its keeper then adopts the successor
        if old_session is not None:
            await old_session.close()
        return True

    def restart_soon(self) -> None:
        """SIGUSR2's handler: one restart at a time (a second signal during one is ignored)."""
        if self.restarting is not None and not self.restarting.done():
            log.warning("restart_already_running")
            return
        self.restarting = asyncio.create_task(self.restart_workers())

    def reload_workers(self) -> None:
        """SIGHUP: every worker re-reads the config itself, and the supervisor too, for the workers it
        starts later (a crashed worker's replacement must not come back with the keys the reload replaced).

        A restart's successor serves as soon as it is ready, while its predecessor still drains: both get
        the signal, or the successor would keep serving with the config the reload replaced.
        """
        if self.config_path is not None:
            try:
                self.config, self.keyring = self._reread()
            except GatewayError as exc:  # the workers refuse it too, each in its own log line
                log.error("reload_refused", reason=exc.message)
        for slot in self.slots:
            for process in (slot.process, slot.successor):
                if process is not None and process.pid:
                    with suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGHUP)
        log.info("reload_forwarded", workers=len(self.slots))

    def _ops_app(self) -> web.Application:
        app = web.Application(middlewares=[json_errors])
        checks: dict[str, appkeys.ReadyCheck] = {"accepting": self._accepting}
        checks.update({f"worker_{slot.index}": partial(self._worker_ready, slot) for slot in self.slots})
        app[appkeys.READY_CHECKS] = checks
        app.router.add_get("/healthz", ops.healthz)
        app.router.add_get("/readyz", ops.readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def _accepting(self) -> bool:
        return not self.draining.is_set()

    async def _worker_ready(self, slot: Slot) -> bool:
        if slot.process is None or slot.session is None:
            return False
        return await _is_ready(slot.session)

    async def _metrics(self, _request: web.Request) -> web.Response:
        """Every worker's metrics added up (counters and histograms over live and exited workers)."""
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _is_ready(session: aiohttp.ClientSession) -> bool:
    """Whether the worker behind ``session``'s Unix socket answers /readyz with 200."""
    try:
        timeout = aiohttp.ClientTimeout(total=READY_TIMEOUT)
        async with session.get("http://worker/readyz", timeout=timeout) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _ready_within(session: aiohttp.ClientSession, deadline: float) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await _is_ready(session):
            return True
        await asyncio.sleep(0.1)  # poll interval while the successor starts
    return False


async def _exited(process: BaseProcess) -> None:
    """Wait, without a thread, until ``process`` has exited: its sentinel turns readable then."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(process.sentinel, wake)
    try:
        await done
    finally:
        loop.remove_reader(process.sentinel)
    process.join()


def _worker_main(
    worker: Worker, config: Config, keyring: Keyring, index: int, ops_socket: str, config_path: str | None
) -> None:
    """A worker process: the normal app on the shared port, until SIGTERM or the supervisor's death."""
    configure_logging(format=config.log.format, level=config.log.level, worker=index)
    parent = multiprocessing.parent_process()
    assert parent is not None  # a spawned child always knows its parent
    try:
        worker(config, keyring, WorkerRole(ops_socket, parent.sentinel, index, config_path))
    except (GatewayError, OSError) as exc:  # what the CLI reports in one line for a single process
        message = exc.message if isinstance(exc, GatewayError) else exc.strerror or exc.__class__.__name__
        log.error("worker_failed", error=message)
        sys.exit(1)
