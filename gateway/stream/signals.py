"""Wake-ups for stream waiters: "events were appended" and "events were acknowledged".

Waiters (long-polling receivers, delivery workers, read-your-writes awaits) never poll in a tight
loop: they sleep on an in-process signal and re-check the store when it fires, or after a modest
fallback interval in case a signal was missed.

A signal must fire only after the writing transaction committed, otherwise a woken waiter would
re-check too early and go back to sleep. Every stream write therefore runs in
``Signals.transaction()`` and calls ``Transaction.announce(kind)`` inside it: on PostgreSQL that
queues ``pg_notify`` (which PostgreSQL delivers at commit, to every replica's LISTEN connection),
and once the transaction has committed ``transaction()`` fires the local signal itself. A rolled
back transaction wakes no one (PostgreSQL drops its notifications too).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

import asyncpg
import structlog
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)
Kind = Literal["append", "ack"]
CHANNEL = "gateway_stream"
_RECONNECT_DELAY = 1.0


class Transaction:
    """A store transaction that remembers which waiters its commit must wake."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.announced: set[Kind] = set()

    async def announce(self, kind: Kind) -> None:
        """Wake ``kind``'s waiters once this transaction commits: here, and on PostgreSQL every replica."""
        if kind in self.announced:
            return
        self.announced.add(kind)
        if self.conn.dialect.name == "postgresql":
            await self.conn.execute(select(func.pg_notify(CHANNEL, kind)))


class Signal:
    """A broadcast wake-up: every ``wait`` started before ``fire`` returns; later ones wait anew."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        current, self._event = self._event, asyncio.Event()
        current.set()

    def ticket(self) -> asyncio.Event:
        """Take before checking the store, wait on after: no wake-up can slip in between."""
        return self._event

    @staticmethod
    async def wait(ticket: asyncio.Event, seconds: float) -> bool:
        """True when fired within ``seconds``."""
        if seconds <= 0:
            return ticket.is_set()
        try:
            await asyncio.wait_for(ticket.wait(), seconds)
        except TimeoutError:
            return False
        return True


class Signals:
    """The app's two signals, fed by local commits and, on PostgreSQL, by other replicas."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.appended = Signal()
        self.acked = Signal()
        self.draining = False

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """``engine.begin()`` for stream writes: right after the commit, fire what the body announced."""
        async with self.engine.begin() as conn:
            tx = Transaction(conn)
            yield tx
        for kind in tx.announced:
            self.fire(kind)

    async def on_shutdown(self, _app: object) -> None:
        """App ``on_shutdown``: long-polls answer now with what they have instead of holding the drain."""
        self.draining = True
        self.appended.fire()

    def fire(self, kind: str) -> None:
        """Wake this process's waiters of ``kind`` (also called with other replicas' notifications)."""
        if kind == "append":
            self.appended.fire()
        elif kind == "ack":
            self.acked.fire()

    async def context(self, _app: object) -> AsyncIterator[None]:
        """Cleanup context: on PostgreSQL keep one LISTEN connection open (reconnecting) while the app runs."""
        task = None
        if self.engine.dialect.name == "postgresql":
            task = asyncio.create_task(self._listen_forever(), name="stream-listen")
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _listen_forever(self) -> None:
        dsn = make_url(self.engine.url).set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                await self._listen_once(dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("stream_listen_failed", error=exc.__class__.__name__)
            await asyncio.sleep(_RECONNECT_DELAY)

    async def _listen_once(self, dsn: str) -> None:
        """Hold one LISTEN connection until PostgreSQL drops it."""
        conn = await asyncpg.connect(dsn)
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            await conn.add_listener(CHANNEL, lambda _c, _pid, _ch, payload: self.fire(payload))
            # Anything committed while we were not listening: wake everyone to re-check.
            self.appended.fire()
            self.acked.fire()
            await lost.wait()
        finally:
            await conn.close()
