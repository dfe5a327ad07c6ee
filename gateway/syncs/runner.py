"""Sync runners inside ``gateway serve``: one poller per sync across all replicas.

A supervisor on every replica ticks every ``lease_ttl / 3`` seconds: for each sync that has
collections to read and is not paused it takes or renews the lease ``sync:<id>`` (the store's
leases, as the delivery workers use) and runs one ``SyncPoller`` while it holds it; a replica that
dies stops renewing, and another takes the sync over within the lease TTL, from the stored cursor.
A poller that loses its lease is stopped; the cursor's generation check keeps an overlapping commit
out meanwhile. The tick also sets ``gateway_sync_lag_seconds`` from the store.

API for the rest of the gateway: ``pause``, ``resume`` and ``backfill`` (the Management API's and the
console's one implementation) change the sync in the store and ``poke`` it, so this replica acts on
it at once rather than at its next tick; ``poke(sync_id)`` alone after creating or changing a sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import structlog
from sqlalchemy.exc import SQLAlchemyError

from gateway.config import Config
from gateway.domain.models import SyncView
from gateway.domain.objects import Sync
from gateway.observability.metrics import Metrics
from gateway.pacing.api import Pacer
from gateway.store.db import utcnow
from gateway.store.leases import Leases
from gateway.store.objects import Objects
from gateway.stream.service import Stream
from gateway.syncs.poller import SettleUnknown, SyncPoller, readings
from gateway.upstream.client import UpstreamClient

log = structlog.get_logger(__name__)


class SyncRunners:
    """The supervisor: leases, one poller per held sync, the lag gauge; an aiohttp cleanup context."""

    def __init__(
        self,
        *,
        objects: Objects,
        stream: Stream,
        client: UpstreamClient,
        pacer: Pacer,
        metrics: Metrics,
        config: Config,
        lease_ttl: float = 15.0,
        shutdown_timeout: float = 5.0,
        owner: str | None = None,
        settle: SettleUnknown | None = None,
    ) -> None:
        self.objects, self.client, self.pacer, self.metrics, self.config = objects, client, pacer, metrics, config
        self.stream = stream
        self.settle = settle  # the mutation journal's hook for creates a crash left unknown
        self.lease_ttl, self.shutdown_timeout = lease_ttl, shutdown_timeout
        self.leases = Leases(objects.engine, owner or "syncs-" + uuid.uuid4().hex[:12], ttl=lease_ttl)
        self.running: dict[str, tuple[SyncPoller, asyncio.Task[None]]] = {}
        self._stop = asyncio.Event()
        self._poked = asyncio.Event()

    def poke(self, sync_id: str) -> None:
        """Something changed for ``sync_id`` (resumed, backfill asked): tick now, wake its poller."""
        current = self.running.get(sync_id)
        if current is not None:
            current[0].wake.set()
        self._poked.set()

    async def pause(self, sync_id: str) -> SyncView:
        """Stop reading the upstream; the cursor stays, so resume goes on from there."""
        view = await self.objects.pause_sync(sync_id, True)
        self.poke(sync_id)
        return view

    async def resume(self, sync_id: str) -> SyncView:
        view = await self.objects.pause_sync(sync_id, False)
        self.poke(sync_id)
        return view

    async def backfill(self, sync_id: str) -> SyncView:
        """Read every record again (unchanged ones make no event); also resumes a paused sync."""
        view = await self.objects.backfill_sync(sync_id)
        self.poke(sync_id)
        return view

    async def context(self, _app: object) -> AsyncIterator[None]:
        supervisor = asyncio.create_task(self._supervise(), name="sync-runners")
        try:
            yield
        finally:
            self._stop.set()
            await supervisor
            await self._stop_all()

    async def on_shutdown(self, _app: object) -> None:
        self._stop.set()
        for poller, _task in self.running.values():
            poller.stop.set()

    async def _supervise(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("sync_runners_tick_failed", error=exc.__class__.__name__)
            except Exception:  # a bug must not stop every sync for good: log it and tick again later
                log.exception("sync_runners_tick_crashed")
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._poked)]
            try:
                await asyncio.wait(waiters, timeout=self.lease_ttl / 3, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            self._poked.clear()

    async def tick(self) -> None:
        """Take or renew the lease of every sync that reads, start and stop pollers, set the lag gauge."""
        syncs = [s for s in await self.objects.all_syncs() if readings(s) and not s.paused]
        for sync in syncs:
            if await self.leases.acquire(f"sync:{sync.id}"):
                self._ensure_running(sync.id)
            else:
                self._stop_poller(sync.id)
        for gone in set(self.running) - {s.id for s in syncs}:
            self._stop_poller(gone)
        self._set_lag(syncs)

    def _ensure_running(self, sync_id: str) -> None:
        current = self.running.get(sync_id)
        if current is not None and not current[1].done():
            return
        poller = SyncPoller(
            sync_id,
            objects=self.objects,
            stream=self.stream,
            client=self.client,
            pacer=self.pacer,
            metrics=self.metrics,
            config=self.config,
            settle=self.settle,
        )
        self.running[sync_id] = (poller, asyncio.create_task(poller.run(), name=f"sync-{sync_id}"))

    def _stop_poller(self, sync_id: str) -> None:
        current = self.running.pop(sync_id, None)
        if current is not None:
            current[0].stop.set()

    def _set_lag(self, syncs: list[Sync]) -> None:
        """Per sync with ``metrics.per_credential``; otherwise the largest lag of all syncs."""
        now = utcnow()
        lags = {s.id: (now - s.caught_up_at).total_seconds() for s in syncs if s.caught_up_at is not None}
        if self.metrics.per_credential:
            for sync_id, lag in lags.items():
                self.metrics.sync_lag.labels(sync_id).set(max(lag, 0.0))
        else:
            self.metrics.sync_lag.set(max([0.0, *lags.values()]))

    async def _stop_all(self) -> None:
        """Stop every poller (a page in flight is simply read again later), release our leases."""
        for poller, _task in self.running.values():
            poller.stop.set()
        tasks = [task for _poller, task in self.running.values()]
        self.running.clear()
        if tasks:
            deadline = time.monotonic() + self.shutdown_timeout
            _, late = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(SQLAlchemyError, OSError):
            await self.leases.release_all()
