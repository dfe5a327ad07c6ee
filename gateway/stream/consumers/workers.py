"""Delivery workers for webhook and postgres consumers, run inside ``gateway serve``.

A supervisor on every replica ticks every ``lease_ttl / 3`` seconds: for each webhook/postgres
consumer it takes or renews the lease ``consumer:<id>`` and runs one ``ConsumerWorker`` while it
holds it (a lease it loses or a consumer that is deleted stops its worker after the batch in
hand). The durable queue is the ``deliveries`` table, so a worker that takes over after a crash
resumes at the first unacknowledged event. It also refreshes the pending gauges and purges events
past ``stream.retention``.

A worker has one batch in flight: claim the lowest pending events (``ordered``), hand them to its
sink until the sink accepts them, then ack. Failures are retried with exponential backoff and
jitter; from the first failure the consumer is marked ``failing`` with the last error, and retries
continue at the longest backoff, keeping its position (nothing is dropped); the first success marks it
active again.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import aiohttp
import structlog
from sqlalchemy.exc import SQLAlchemyError

from gateway.domain.models import Event
from gateway.domain.objects import Consumer
from gateway.egress import EgressPolicy
from gateway.errors import NotFound
from gateway.store.leases import Leases
from gateway.store.objects import Objects
from gateway.stream.consumers.postgres import PostgresSink
from gateway.stream.consumers.webhook import DeliveryFailed, WebhookSink
from gateway.stream.delivery import RECHECK_SECONDS, Delivery
from gateway.stream.events import purge_expired
from gateway.stream.service import Stream

log = structlog.get_logger(__name__)
KINDS = ("webhook", "postgres")
PURGE_EVERY = 600.0
MIN_TICK = 1.0
HOLD_MARGIN = 30.0  # a claimed batch stays hidden this long past the sink's own timeout
DEFAULT_MAX_BACKOFF = 60.0  # seconds: the longest pause between two deliveries of a failing batch


class Sink(Protocol):
    async def deliver(self, consumer: Consumer, events: Sequence[Event]) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Backoff:
    """Retry delays: ``base * 2**attempt`` with jitter, capped at the consumer's ``max_backoff``.

    The cap is also at most a tenth of ``max_retry_duration`` (at least 1 s), so a consumer that
    gives up quickly also retries quickly; with the defaults a receiver that comes back is served
    again within ``max_backoff`` (60 s).
    """

    base: float = 0.5

    def delay(self, attempt: int, *, max_retry_duration: float, max_backoff: float) -> float:
        ceiling = min(max_backoff, max(1.0, max_retry_duration / 10))
        return float(min(ceiling, self.base * 2 ** min(attempt, 30)) * random.uniform(0.5, 1.0))


async def _first(events: Sequence[asyncio.Event], seconds: float) -> None:
    """Return when any of ``events`` is set or after ``seconds``."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class ConsumerWorker:
    """Delivers one consumer's events, one batch in flight, until ``stop`` is set."""

    def __init__(self, consumer_id: str, *, objects: Objects, stream: Stream, sink: Sink, backoff: Backoff) -> None:
        self.consumer_id = consumer_id
        self.objects, self.stream, self.sink, self.backoff = objects, stream, sink, backoff
        self.stop = asyncio.Event()

    async def run(self) -> None:
        crashes = 0
        try:
            while not self.stop.is_set():
                try:
                    await self._step()
                    crashes = 0
                except NotFound:
                    return  # the consumer was deleted
                except (SQLAlchemyError, OSError) as exc:
                    log.warning("consumer_worker_store_error", consumer=self.consumer_id, error=exc.__class__.__name__)
                    await _first([self.stop], RECHECK_SECONDS)
                except Exception as exc:  # a setting the sink cannot use, or a bug: visible, then retried
                    await self._cannot_run(exc)
                    retry_in = self.backoff.delay(crashes, max_retry_duration=math.inf, max_backoff=DEFAULT_MAX_BACKOFF)
                    await _first([self.stop], retry_in)
                    crashes += 1
        finally:
            await self.sink.close()

    async def _cannot_run(self, exc: Exception) -> None:
        """Mark the consumer ``failing`` with the reason, instead of a task that dies unseen at every tick."""
        log.error("consumer_worker_crashed", consumer=self.consumer_id, exc_info=exc)
        detail = f"worker cannot run: {exc.__class__.__name__}: {exc}"[:300]
        with contextlib.suppress(SQLAlchemyError, OSError, NotFound):
            await self.objects.set_consumer_status(self.consumer_id, "failing", detail)

    async def _step(self) -> None:
        """Claim the next batch and see it through, or wait for events to arrive."""
        consumer = await self.objects.consumer(self.consumer_id)
        ticket = self.stream.signals.appended.ticket()
        batch = await self.stream.queue.claim(
            consumer.id,
            batch_size=int(consumer.settings.get("batch_size", 10)),
            visibility=_hold(consumer),
            ordered=True,
        )
        if not batch:
            await _first([ticket, self.stop], RECHECK_SECONDS)
        elif await self._deliver(consumer, batch):
            await self.stream.queue.ack(consumer.id, [d.ack_id for d in batch])

    async def _deliver(self, consumer: Consumer, batch: Sequence[Delivery]) -> bool:
        """Retry until the sink accepts the batch (True) or the worker is stopped (False)."""
        events, ack_ids = [d.event for d in batch], [d.ack_id for d in batch]
        max_retry = float(consumer.settings.get("max_retry_duration", 86400))
        attempt, shown = 0, None
        while not self.stop.is_set():
            try:
                await self.sink.deliver(consumer, events)
            except DeliveryFailed as exc:
                attempt += 1
                log.warning("consumer_delivery_failed", consumer=consumer.id, attempt=attempt, error=str(exc))
                if (detail := f"delivery failing: {exc}") != shown:  # failing from the first failure, last error
                    await self.objects.set_consumer_status(consumer.id, "failing", detail)
                    consumer, shown = replace(consumer, status="failing"), detail
                delay = self.backoff.delay(
                    attempt - 1,
                    max_retry_duration=max_retry,
                    max_backoff=float(consumer.settings.get("max_backoff", DEFAULT_MAX_BACKOFF)),
                )
                await self.stream.queue.extend(consumer.id, ack_ids, visibility=delay + _hold(consumer))
                await _first([self.stop], delay)
                continue
            if consumer.status == "failing":
                await self.objects.set_consumer_status(consumer.id, "active", None)
            return True
        return False


def _hold(consumer: Consumer) -> float:
    return float(consumer.settings.get("timeout", 30)) + HOLD_MARGIN


class Workers:
    """The supervisor: leases, one worker per held consumer, gauges, retention; an aiohttp cleanup context."""

    def __init__(
        self,
        *,
        objects: Objects,
        stream: Stream,
        retention: float,
        shutdown_timeout: float,
        lease_ttl: float = 15.0,
        owner: str | None = None,
        backoff: Backoff = Backoff(),
        egress: EgressPolicy | None = None,
    ) -> None:
        """``egress``: the policy webhook POSTs and postgres connections go through (the app passes the
        configured one)."""
        self.objects, self.stream, self.backoff = objects, stream, backoff
        self.egress = egress or EgressPolicy(())
        self.retention, self.shutdown_timeout, self.lease_ttl = retention, shutdown_timeout, lease_ttl
        self.leases = Leases(objects.engine, owner or "replica-" + uuid.uuid4().hex[:12], ttl=lease_ttl)
        self.running: dict[str, tuple[ConsumerWorker, asyncio.Task[None]]] = {}
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._last_purge = -PURGE_EVERY
        self._drain_deadline: float | None = None

    async def on_shutdown(self, _app: object) -> None:
        """App ``on_shutdown``: stop ticking and let batches in flight finish alongside the HTTP drain.

        Requests and deliveries then share the one ``shutdown_timeout`` budget; starting this only at
        cleanup (after the requests' drain) could double the time to exit.
        """
        self._drain_deadline = time.monotonic() + self.shutdown_timeout
        self._stop.set()
        for worker, _task in self.running.values():
            worker.stop.set()

    async def context(self, _app: object) -> AsyncIterator[None]:
        supervisor = asyncio.create_task(self._supervise(), name="stream-workers")
        try:
            yield
        finally:
            self._stop.set()
            await supervisor
            await self.close()

    async def _supervise(self) -> None:
        """Tick every lease_ttl/3, and soon after appends (a new consumer's first events), at most 1/s."""
        while not self._stop.is_set():
            ticket = self.stream.signals.appended.ticket()
            try:
                await self.tick()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("stream_workers_tick_failed", error=exc.__class__.__name__)
            except Exception:  # a bug must not stop deliveries for good: log it and tick again later
                log.exception("stream_workers_tick_crashed")
            await _first([self._stop], MIN_TICK)
            await _first([self._stop, ticket], max(0.0, self.lease_ttl / 3 - MIN_TICK))

    async def tick(self) -> None:
        """One supervision round: take or renew leases, start and stop workers, gauges, retention."""
        everyone = await self.objects.all_consumers()
        await self.stream.queue.refresh_all_pending([c.id for c in everyone])
        consumers = [c for c in everyone if c.kind in KINDS]
        for consumer in consumers:
            if await self.leases.acquire(f"consumer:{consumer.id}"):
                self._ensure_running(consumer)
            else:
                self._stop_worker(consumer.id)
        for gone in set(self.running) - {c.id for c in consumers}:
            self._stop_worker(gone)
        if time.monotonic() - self._last_purge >= PURGE_EVERY:
            self._last_purge = time.monotonic()
            async with self.objects.engine.begin() as conn:
                purged = await purge_expired(conn, retention=self.retention)
            if purged:
                log.info("stream_events_purged", count=purged)

    def _ensure_running(self, consumer: Consumer) -> None:
        current = self.running.get(consumer.id)
        if current is not None and not current[1].done():
            return
        sink: Sink = PostgresSink(self.egress) if consumer.kind == "postgres" else WebhookSink(self._client())
        worker = ConsumerWorker(consumer.id, objects=self.objects, stream=self.stream, sink=sink, backoff=self.backoff)
        self.running[consumer.id] = (worker, asyncio.create_task(worker.run(), name=f"consumer-{consumer.id}"))

    def _stop_worker(self, consumer_id: str) -> None:
        current = self.running.pop(consumer_id, None)
        if current is not None:
            current[0].stop.set()

    async def _stop_all(self) -> None:
        """Let in-flight batches finish (up to shutdown_timeout), then cancel; release our leases."""
        for worker, _task in self.running.values():
            worker.stop.set()
        tasks = [task for _worker, task in self.running.values()]
        self.running.clear()
        budget = self.shutdown_timeout or None
        if self._drain_deadline is not None:
            budget = max(0.0, self._drain_deadline - time.monotonic())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=budget)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(SQLAlchemyError, OSError):
            await self.leases.release_all()

    def _client(self) -> aiohttp.ClientSession:
        """The webhook sinks' shared session, opened on first use (inside the running loop)."""
        if self._session is None:
            # No cookie store: one receiver's Set-Cookie never rides on another consumer's delivery.
            jar = aiohttp.DummyCookieJar()
            self._session = aiohttp.ClientSession(connector=self.egress.connector(), cookie_jar=jar)
        return self._session

    async def close(self) -> None:
        """Stop every worker (finishing in-flight batches), release leases, close the session."""
        await self._stop_all()
        if self._session is not None:
            await self._session.close()
            self._session = None
