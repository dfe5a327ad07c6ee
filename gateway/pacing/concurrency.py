"""``max_concurrency`` permits shared by every replica and worker, as leases in Redis: kept alive here.

Providers cap concurrent calls per account, not per gateway process, so with the Redis backend a
permit is a lease in one sorted set per credential. pacing.lua grants it together with the call's
slot, to the head of the bucket's shared queue, so permits follow the queue's order (class, fair
share, FIFO) across replicas; this module keeps the leases this process holds alive and ends them.

- Leases expire ``ttl`` after their last renewal: a crashed replica's permits come back within
  ``ttl``. One keeper task per process renews every held lease each ``ttl / 3`` (permits.lua), and
  runs only while the process holds leases, so a call longer than ``ttl`` keeps its permit.
- Ending a lease wakes this replica's calls waiting for one at once (redis.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import structlog

from gateway.pacing.backend import BackendError, Permit
from gateway.pacing.redis import LEASE_TTL, RedisBackend

log = structlog.get_logger(__name__)


class SharedPermits:
    def __init__(self, backend: RedisBackend, *, ttl: float = LEASE_TTL) -> None:
        self._backend = backend
        self._ttl = ttl
        self._held: dict[str, set[str]] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def hold(self, permit: Permit) -> None:
        """Keep a granted lease alive until ``release``."""
        self._held.setdefault(permit.key, set()).add(permit.id)
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.get_running_loop().create_task(self._keep())

    def release(self, permit: Permit) -> None:
        """Give the permit back (in the background: callers release synchronously)."""
        held = self._held.get(permit.key)
        if held is not None:
            held.discard(permit.id)
            if not held:
                del self._held[permit.key]
        self._spawn(self._drop(permit))

    async def close(self) -> None:
        """Stop renewing; held leases are left to expire (their calls may still be running)."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        for task in list(self._background):
            with contextlib.suppress(Exception):
                await task

    # --- internals ----------------------------------------------------------------------------------

    async def _drop(self, permit: Permit) -> None:
        try:
            await self._backend.drop_permit(permit)
        except BackendError as exc:  # the lease expires within the TTL anyway
            log.warning("pacing_permit_not_released", reason=str(exc))

    async def _keep(self) -> None:
        """Renew every held lease each TTL/3 while this process holds any."""
        while self._held:
            await asyncio.sleep(self._ttl / 3)
            await asyncio.gather(*(self._renew(key, list(permits)) for key, permits in list(self._held.items())))

    async def _renew(self, key: str, permits: list[str]) -> None:
        try:
            lapsed = await self._backend.renew_permits(key, permits, self._ttl)
        except BackendError as exc:  # retried next round; beyond the TTL the leases lapse
            log.warning("pacing_permit_renewal_failed", reason=str(exc))
            return
        held = self._held.get(key, set())
        lost = lapsed & held  # not those released while the renewal was on its way
        if lost:
            # Renewals failed for a whole TTL (an outage): the permit may be someone else's now.
            log.warning("pacing_permits_lapsed", lapsed=len(lost))
            held -= lost
            if not held:
                self._held.pop(key, None)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
