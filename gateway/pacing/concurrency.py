"""``max_concurrency`` permits shared by every replica and worker, as leases in Redis.

Providers cap concurrent calls per account, not per gateway process, so with the Redis backend a
permit is a lease in one sorted set per credential (permits.lua): granted atomically while fewer than
``limit`` live leases exist, renewed while the call runs, removed when it ends.

- Leases expire ``ttl`` after their last renewal: a crashed replica's permits come back within
  ``ttl``. One keeper task per process renews every held lease each ``ttl / 3``, and runs only while
  the process holds leases, so a call longer than ``ttl`` keeps its permit.
- Waiting: FIFO inside a process. Waiters queue per credential and only the head asks Redis, polling
  at 5 ms growing to 50 ms; a release in this process wakes the head as soon as Redis has it. Across
  processes it is first come at poll time, not strict FIFO: a head of another replica that polls
  first takes a freed permit.
- The caller's give-up time bounds the whole wait (``None`` then). Redis errors raise ``BackendError``
  for the pacer's policy; a call in flight when its waiter is cancelled gives back what it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway.pacing.backend import BackendError
from gateway.pacing.redis import LEASE_TTL, RedisBackend

log = structlog.get_logger(__name__)
FIRST_POLL = 0.005
LAST_POLL = 0.05


@dataclass(frozen=True)
class Lease:
    key: str
    permit: str


@dataclass(eq=False)
class _Waiter:
    """One queued caller; ``wake`` is set when it becomes the head or a permit came back."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)


class SharedPermits:
    def __init__(self, backend: RedisBackend, *, ttl: float = LEASE_TTL) -> None:
        self._backend = backend
        self._ttl = ttl
        self._queues: dict[str, deque[_Waiter]] = {}
        self._held: dict[str, set[str]] = {}
        self._keeper: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    async def acquire(self, key: str, limit: int, give_up_at: float) -> Lease | None:
        """A lease on one of ``limit`` permits, or None once ``time.monotonic()`` passes ``give_up_at``."""
        me = _Waiter()
        queue = self._queues.setdefault(key, deque())
        queue.append(me)
        poll = FIRST_POLL
        try:
            while True:
                me.wake.clear()
                if queue[0] is me:
                    lease = Lease(key, uuid.uuid4().hex)
                    if await self._take(lease, limit):
                        return lease
                remaining = give_up_at - time.monotonic()
                if remaining <= 0:
                    return None
                pause = min(poll, remaining) if queue[0] is me else remaining
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(me.wake.wait(), pause)
                poll = min(poll * 2, LAST_POLL) if queue[0] is me else FIRST_POLL
        finally:
            self._leave(key, me)

    def release(self, lease: Lease) -> None:
        """Give the permit back (in the background: callers release synchronously)."""
        held = self._held.get(lease.key)
        if held is not None:
            held.discard(lease.permit)
            if not held:
                del self._held[lease.key]
        self._spawn(self._drop(lease))

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

    async def _take(self, lease: Lease, limit: int) -> bool:
        """Ask Redis once. If the caller is cancelled meanwhile, a lease granted anyway is dropped."""
        call = asyncio.ensure_future(self._backend.take_permit(lease.key, lease.permit, limit, self._ttl))
        try:
            granted = await asyncio.shield(call)
        except asyncio.CancelledError:
            call.add_done_callback(lambda done: self._abandon(done, lease))
            raise
        if granted:
            self._held.setdefault(lease.key, set()).add(lease.permit)
            if self._keeper is None or self._keeper.done():
                self._keeper = asyncio.get_running_loop().create_task(self._keep())
        return granted

    def _abandon(self, call: asyncio.Future[bool], lease: Lease) -> None:
        if not call.cancelled() and call.exception() is None and call.result():
            self._spawn(self._drop(lease))

    def _leave(self, key: str, me: _Waiter) -> None:
        queue = self._queues[key]
        was_head = queue[0] is me
        queue.remove(me)
        if not queue:
            del self._queues[key]
        elif was_head:
            queue[0].wake.set()

    async def _drop(self, lease: Lease) -> None:
        try:
            await self._backend.drop_permit(lease.key, lease.permit)
        except BackendError as exc:  # the lease expires within the TTL anyway
            log.warning("pacing_permit_not_released", reason=str(exc))
        queue = self._queues.get(lease.key)
        if queue:
            queue[0].wake.set()

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
