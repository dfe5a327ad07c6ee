"""In-process waiting: one scheduler and one timer per bucket (local backend, and Redis's fallback).

A call that finds its bucket idle and conforming is granted at once, without awaiting. Otherwise it
is refused before queueing when the estimate (calls ahead of it times the interval, plus the time
to the next slot) is already beyond ``max_wait``, or queued in the bucket's ``Scheduler``. The
bucket then has exactly one timer, set to the earlier of the next slot and the next deadline; when
it fires it answers the calls whose ``max_wait`` ran out (429, never sent), grants every slot that
is due to the call the scheduler picks (charged with ``bucket.take``), and sets itself again. No
polling, no task per waiter: a waiter is one future.

``max_concurrency`` permits are part of the same grant: the head takes a permit together with its
slot, so permits are handed out in the scheduler's order too, and a permit coming back fires the
credential's queues at once.

A cancelled waiter leaves the scheduler at once (it held no slot); one cancelled after its grant but
before it ran gives the slot and the permit back, and the next call takes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.pacing import bucket
from gateway.pacing.backend import Refused, Reservation
from gateway.pacing.registry import BucketSpec
from gateway.pacing.scheduler import Scheduler, Share, Waiter

Outcome = Reservation | Refused


@dataclass(eq=False)
class Permits:
    """The in-process ``max_concurrency`` of one credential; ``queues`` are fired when one comes back.

    ``on_idle`` is called when no permit is held and no queue waits for one: its owner may forget it.
    """

    limit: int
    on_idle: Callable[[Permits], None] | None = None
    held: int = 0
    queues: set[BucketQueue] = field(default_factory=set)

    @property
    def free(self) -> bool:
        return self.held < self.limit

    def give_back(self) -> None:
        self.held -= 1
        for queue in list(self.queues):
            queue.fire()
        self._idle()

    def detach(self, queue: BucketQueue) -> None:
        """``queue`` is empty and gone."""
        self.queues.discard(queue)
        self._idle()

    def _idle(self) -> None:
        if not self.held and not self.queues and self.on_idle is not None:
            self.on_idle(self)


@dataclass(frozen=True)
class Ticket:
    """A queued call: the future its grant or refusal arrives on."""

    queue: BucketQueue
    waiter: Waiter[asyncio.Future[Outcome]]


class BucketQueue:
    """The waiters of one (home) bucket; ``states`` and ``now`` are the local backend's."""

    def __init__(
        self,
        buckets: tuple[BucketSpec, ...],
        states: Callable[[str], bucket.BucketState],
        now: Callable[[], int],
        permits: Permits | None,
        on_empty: Callable[[BucketQueue], None],
    ) -> None:
        self.buckets = buckets
        self.scheduler: Scheduler[asyncio.Future[Outcome]] = Scheduler()
        self._states = states
        self._now = now
        self._permits = permits
        self._on_empty = on_empty
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0
        # A waiter's own buckets and cost when they differ from the queue's (rules, x-gateway-cost):
        # the queue orders calls of one home bucket; each is charged on the buckets it takes.
        self._buckets_of: dict[asyncio.Future[Outcome], tuple[BucketSpec, ...]] = {}
        if permits is not None:
            permits.queues.add(self)

    def _pairs(self, buckets: tuple[BucketSpec, ...] | None = None) -> list[tuple[bucket.BucketState, bucket.Limit]]:
        return [(self._states(spec.key), spec.schedule) for spec in buckets or self.buckets]

    def _buckets(self, waiter: Waiter[asyncio.Future[Outcome]]) -> tuple[BucketSpec, ...]:
        return self._buckets_of.get(waiter.ticket, self.buckets)

    def _may_grant(self) -> bool:
        return self._permits is None or self._permits.free

    def enter(self, buckets: tuple[BucketSpec, ...], share: Share, max_wait: float) -> Outcome | Ticket:
        """Grant now, refuse now, or queue (see the module docstring)."""
        now, pairs = self._now(), self._pairs(buckets)
        if not self.scheduler and self._may_grant():
            outcome = bucket.reserve(pairs, now, 0)
            if isinstance(outcome, bucket.Grant):
                self._drop_if_empty()
                return self._granted(buckets, outcome.charges, outcome.slot)
        wait = bucket.estimate(pairs, now, self.scheduler.ahead(share.cls, share.tenant))
        budget = int(max_wait * bucket.US)
        if wait > budget:
            self._drop_if_empty()
            return Refused(retry_after=wait / bucket.US)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        waiter = self.scheduler.push(
            share.cls, share.tenant, share.weight, arrival=now, deadline=now + budget, ticket=future
        )
        if buckets != self.buckets:
            self._buckets_of[future] = buckets
        self._arm(now)
        return Ticket(self, waiter)

    def abandon(self, waiter: Waiter[asyncio.Future[Outcome]]) -> None:
        """The caller went away: leave the queue, or give back what was granted meanwhile."""
        future = waiter.ticket
        granted = future.result() if future.done() and not future.cancelled() else None
        if isinstance(granted, Reservation):
            self.give_back(granted)
        elif self.scheduler.remove(waiter):
            self._buckets_of.pop(future, None)
            self._arm(self._now())

    def give_back(self, reservation: Reservation) -> None:
        """A granted slot (and permit) that will not be used: the next call takes it."""
        now = self._now()
        for spec, charge in zip(reservation.buckets, reservation.charges, strict=True):
            bucket.release(self._states(spec.key), spec.schedule, charge, now)
        if self._permits is not None:
            self._permits.give_back()
        else:
            self.fire()

    def fire(self) -> None:
        """Answer expired calls, grant every due slot in the scheduler's order, set the timer again."""
        if self._timer is not None:  # called directly (a slot or permit came back), not by the timer
            self._timer.cancel()
            self._timer = None
        now = self._now()
        for waiter in self.scheduler.expired(now):
            if not waiter.ticket.done():
                waiter.ticket.set_result(Refused(retry_after=self._retry_after(waiter, now)))
            self._buckets_of.pop(waiter.ticket, None)
        while (head := self.scheduler.peek()) is not None and self._may_grant():
            if head.ticket.done():  # cancelled; its task has not run its cleanup yet
                self.scheduler.pop()
                self._buckets_of.pop(head.ticket, None)
                continue
            buckets = self._buckets(head)
            pairs = self._pairs(buckets)
            slot = bucket.head_slot(pairs, head.arrival, now)
            if slot > now:
                break
            self.scheduler.pop()
            self._buckets_of.pop(head.ticket, None)
            head.ticket.set_result(self._granted(buckets, bucket.take(pairs, slot), slot))
        self._arm(now)

    def _granted(self, buckets: tuple[BucketSpec, ...], charges: tuple[bucket.Charge, ...], slot: int) -> Reservation:
        if self._permits is not None:
            self._permits.held += 1
        return Reservation(buckets, charges, deadline=slot / bucket.US)

    def _retry_after(self, waiter: Waiter[asyncio.Future[Outcome]], now: int) -> float:
        pairs = self._pairs(self._buckets(waiter))
        wait = bucket.estimate(pairs, now, self.scheduler.ahead(waiter.cls, waiter.tenant))
        return max(wait, max(limit.interval for _, limit in pairs)) / bucket.US

    def _arm(self, now: int) -> None:
        """One timer: at the next slot the head may take (if a permit is free), or the next deadline."""
        wake = self.scheduler.next_deadline()
        head = self.scheduler.peek()
        if head is not None and self._may_grant():
            slot = bucket.head_slot(self._pairs(self._buckets(head)), head.arrival, now)
            wake = slot if wake is None else min(wake, slot)
        if self._timer is not None and (wake is None or wake != self._timer_at):
            self._timer.cancel()
            self._timer = None
        if wake is None:
            self._drop_if_empty()
        elif self._timer is None:
            self._timer_at = wake
            self._timer = asyncio.get_running_loop().call_at(wake / bucket.US, self.fire)

    def _drop_if_empty(self) -> None:
        if not self.scheduler and self._timer is None:
            self._on_empty(self)
            if self._permits is not None:
                self._permits.detach(self)


async def wait(ticket: Ticket) -> Outcome:
    """Await a queued call's grant or refusal; cancellation leaks neither a slot nor a place."""
    try:
        return await ticket.waiter.ticket
    except asyncio.CancelledError:
        ticket.queue.abandon(ticket.waiter)
        raise
