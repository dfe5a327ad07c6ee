"""Wake-ups for stream waiters: "events were appended" and "events were acknowledged".

Waiters (long-polling receivers, delivery workers, read-your-writes awaits) never poll in a tight
loop: they sleep on an in-process signal and re-check the store when it fires, or after a modest
fallback interval in case a signal was missed.

A signal must fire only after the writing transaction committed, otherwise a woken waiter would
re-check too early and go back to sleep. Writers therefore call ``mark(conn, kind)`` inside their
transaction: on PostgreSQL that queues ``pg_notify`` (which PostgreSQL delivers at commit, to every
replica's LISTEN connection), and on every store it flags the pooled connection so that the pool's
``checkin`` event — which runs once the transaction is over and the connection goes back to the
pool — fires the local signal. A spurious wake-up after a rollback is harmless: waiters re-check.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal

import asyncpg
import structlog
from sqlalchemy import event, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = structlog.get_logger(__name__)
Kind = Literal["append", "ack"]
CHANNEL = "gateway_stream"
_FLAG = "gateway_stream_signals"
_RECONNECT_DELAY = 1.0


async def mark(conn: AsyncConnection, kind: Kind) -> None:
    """Arrange for ``kind`` to be signalled once ``conn``'s transaction is over (see module doc)."""
    conn.info.setdefault(_FLAG, set()).add(kind)
    if conn.dialect.name == "postgresql":
        await conn.execute(select(func.pg_notify(CHANNEL, kind)))


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
        event.listen(engine.sync_engine, "checkin", self._on_checkin)

    async def on_shutdown(self, _app: object) -> None:
        """App ``on_shutdown``: long-polls answer now with what they have instead of holding the drain."""
        self.draining = True
        self.appended.fire()

    def fire(self, kind: str) -> None:
        if kind == "append":
            self.appended.fire()
        elif kind == "ack":
            self.acked.fire()

    def _on_checkin(self, _dbapi_connection: Any, record: Any) -> None:
        for kind in record.info.pop(_FLAG, ()):
            self.fire(kind)

    def close(self) -> None:
        event.remove(self.engine.sync_engine, "checkin", self._on_checkin)

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
            self.close()

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
