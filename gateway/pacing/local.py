"""In-process buckets: the default backend for one replica, and the fallback when Redis is down.

Everything here runs without awaiting, so the event loop cannot interleave two decisions. Calls
that must wait queue in one ``BucketQueue`` per home bucket (queue.py: priorities, fair share, one
timer); ``reserve_now`` is the plain arrival-order reservation, ``hold_back`` the pacer's stall guard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from gateway.pacing import bucket
from gateway.pacing.backend import Refused, Reservation
from gateway.pacing.queue import BucketQueue, Outcome, Permits, Ticket
from gateway.pacing.registry import BucketSpec
from gateway.pacing.scheduler import Share

# Bucket states held before the idle ones are forgotten (then twice those left): as many as the
# credential cache holds by default, so 10,000 credentials called in turn keep theirs instead of
# making a new state for nearly every call (a fast bucket is idle again microseconds after a call).
SWEEP_FROM = 16_384


class LocalBackend:
    """Bucket states in a dict; the clock is the running event loop's unless one is injected."""

    name = "local"

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._states: dict[str, bucket.BucketState] = {}
        self._sweep_at = SWEEP_FROM
        self._queues: dict[str, BucketQueue] = {}

    def __len__(self) -> int:
        """Buckets held in memory (idle ones are forgotten, see ``_sweep``)."""
        return len(self._states)

    def __contains__(self, key: str) -> bool:
        return key in self._states

    def _now(self) -> int:
        return int(self._clock() * bucket.US)

    def _state(self, key: str) -> bucket.BucketState:
        state = self._states.get(key)
        if state is None:
            if len(self._states) >= self._sweep_at:
                self._sweep()
            state = self._states[key] = bucket.BucketState()
        return state

    def _sweep(self) -> None:
        """Forget idle buckets: a bucket whose ``tat`` and pause have passed behaves like a new one,
        so this loses nothing, and it bounds memory when keys are many (one per Airtable base)."""
        now = self._now()
        idle = [k for k, s in self._states.items() if s.tat <= now and s.paused_until <= now and not s.holes]
        for key in idle:
            del self._states[key]
        self._sweep_at = max(SWEEP_FROM, 2 * len(self._states))

    def enter(
        self, buckets: tuple[BucketSpec, ...], share: Share, max_wait: float, permits: Permits | None
    ) -> Outcome | Ticket:
        """Grant now, refuse now, or queue in the home bucket's queue (queue.py); never awaits."""
        home = buckets[0].key
        queue = self._queues.get(home)
        if queue is None:
            if permits is None or permits.free:  # nobody waits: the plain reservation, no queue made
                now = self._now()
                outcome = bucket.reserve([(self._state(b.key), b.schedule) for b in buckets], now, 0)
                if isinstance(outcome, bucket.Grant):
                    if permits is not None:
                        permits.held += 1
                    return Reservation(buckets, outcome.charges, deadline=outcome.slot / bucket.US)
            queue = self._queues[home] = BucketQueue(buckets, self._state, self._now, permits, self._forget)
        return queue.enter(buckets, share, max_wait)

    def grant_now(self, buckets: tuple[BucketSpec, ...]) -> bool:
        """``enter`` for the common call, when nothing else is needed: one bucket, nobody queued, no
        holes, the slot already here. Charged and True; False (nothing charged) leaves the call to
        ``enter``. Builds no grant, charge or reservation: the pacer's two reservations per call
        (bucket and stall guard) were most of its cost."""
        if len(buckets) != 1 or buckets[0].key in self._queues:
            return False
        spec = buckets[0]
        state = self._state(spec.key)
        return not state.holes and bucket.take_due(state, spec.schedule, self._now())

    def _forget(self, queue: BucketQueue) -> None:
        if self._queues.get(queue.buckets[0].key) is queue:
            del self._queues[queue.buckets[0].key]

    def reserve_now(self, buckets: Sequence[BucketSpec], max_wait: float) -> Reservation | Refused:
        """A plain arrival-order reservation (no queue)."""
        outcome, _ = self._reserve(buckets, max_wait)
        if isinstance(outcome, bucket.Refusal):
            return Refused(retry_after=outcome.retry_after / bucket.US)
        return Reservation(tuple(buckets), outcome.charges, deadline=outcome.slot / bucket.US)

    def hold_back(self, buckets: tuple[BucketSpec, ...], max_wait: float) -> Reservation | None:
        """The pacer's stall guard: ``reserve_now``, answering only a reservation whose slot is still to
        come (None for a slot already here, nearly every call, or a refusal), compared with the same
        clock reading the slot came from."""
        if self.grant_now(buckets):
            return None
        outcome, now = self._reserve(buckets, max_wait)
        if isinstance(outcome, bucket.Refusal) or outcome.slot <= now:
            return None
        return Reservation(buckets, outcome.charges, deadline=outcome.slot / bucket.US)

    def _reserve(self, buckets: Sequence[BucketSpec], max_wait: float) -> tuple[bucket.Grant | bucket.Refusal, int]:
        now = self._now()
        pairs = [(self._state(b.key), b.schedule) for b in buckets]
        return bucket.reserve(pairs, now, int(max_wait * bucket.US)), now

    async def release(self, reservation: Reservation) -> None:
        now = self._now()
        for spec, charge in zip(reservation.buckets, reservation.charges, strict=True):
            bucket.release(self._state(spec.key), spec.schedule, charge, now)
        queue = self._queues.get(reservation.buckets[0].key)
        if queue is not None:
            queue.fire()  # the slot given back may be due now

    async def pause(self, spec: BucketSpec, seconds: float) -> None:
        bucket.pause(self._state(spec.key), spec.limit.schedule, self._now() + int(seconds * bucket.US))

    async def describe(self, spec: BucketSpec) -> dict[str, Any]:
        now = self._now()
        state = self._state(spec.key)
        paused = state.paused_until if state.paused_until > now else None
        return {
            "tokens": round(bucket.tokens(state, spec.limit.schedule, now), 3),
            "paused_until": None if paused is None else time.time() + (paused - now) / bucket.US,
        }

    async def ping(self) -> bool:
        return True
