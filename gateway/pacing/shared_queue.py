"""This replica's calls waiting in a Redis-held bucket queue: one poller task per bucket, not per call.

The queue itself (who is next, when the next slot is due) lives in Redis (pacing.lua); a replica only
keeps a future per queued call and polls when something can change for them: at the instant the
next grant is due (the script says when), at the earliest ``max_wait`` deadline of its calls, when
one of its callers leaves, and at least every third of the lease so its calls stay alive. Each poll
collects the calls that any replica granted to this one, removes the cancelled and expired ones, and
grants what is due. The script charges each call on its own buckets and cost (and its
``max_concurrency`` permit); only the call's replica knows those, so the queue keeps per call how
to make its reservation from the grant.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.pacing.backend import BackendError, Place, Refused, Reservation
from gateway.pacing.bucket import Charge

MIN_GAP = 0.001  # seconds between two polls of one queue: the clock offset is an estimate
CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True)
class Granted:
    """One grant as the script reports it: ``charges`` in the call's own buckets, ``deadline`` in loop time."""

    place: Place
    charges: tuple[Charge, ...]
    deadline: float


Maker = Callable[[Granted], Reservation]  # a call's reservation from its grant (its buckets, its permit)


@dataclass(frozen=True)
class Polled:
    """One poll's answer: calls granted to this replica (member -> grant), next grant (loop time)."""

    granted: dict[str, Granted]
    wake: float
    retry_after: float


Poll = Callable[[list[str]], Awaitable[Polled]]


class SharedQueue:
    """The calls of this replica queued in one Redis bucket queue."""

    def __init__(self, poll: Poll, release: Callable[[Reservation], None], renew_every: float) -> None:
        self._poll = poll
        self._release = release
        self._renew_every = renew_every
        self._waiters: dict[str, asyncio.Future[Reservation | Refused]] = {}
        self._makers: dict[str, Maker] = {}  # each waiter's
        self._deadlines: list[tuple[float, str]] = []
        self._cancels: list[str] = []
        self._left: dict[str, Maker] = {}  # callers gone: a grant still on its way is given back
        self._early: dict[str, Granted] = {}  # granted before the arrival's own answer was read
        self._wake_at = math.inf
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def __bool__(self) -> bool:
        return bool(self._waiters or self._cancels)

    @property
    def idle(self) -> bool:
        """Nothing waits or leaves, no grant waits for its caller, no poll runs: the queue may go.

        ``_left`` is not looked at: it is emptied by the poll that takes those places out, and what
        stays in it was in a poll that failed (Redis down); a grant of theirs arriving later is then
        not given back by this replica, and their places lapse with its lease.
        """
        return not (self or self._early) and (self._task is None or self._task.done())

    def add(self, member: str, maker: Maker, deadline: float, wake: float) -> asyncio.Future[Reservation | Refused]:
        future: asyncio.Future[Reservation | Refused] = asyncio.get_running_loop().create_future()
        early = self._early.pop(member, None)
        if early is not None:  # a poll on another connection answered first
            future.set_result(maker(early))
            return future
        self._waiters[member] = future
        self._makers[member] = maker
        heapq.heappush(self._deadlines, (deadline, member))
        self._wake_at = min(self._wake_at, wake)
        self._changed.set()
        self._start()
        return future

    def leave(self, member: str, maker: Maker) -> None:
        """The caller went away: its place is taken out at the next poll, which starts now."""
        self._waiters.pop(member, None)
        self._makers.pop(member, None)
        early = self._early.pop(member, None)
        if early is not None:  # granted already, before its caller even knew its place
            self._release(maker(early))
            return
        self._left[member] = maker
        self._cancels.append(member)

    def nudge(self) -> None:
        """Poll now if calls wait (a permit came back in this replica)."""
        if self:
            self._changed.set()
        self._changed.set()
        self._start()

    def _start(self) -> None:
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop polling for good; the calls still queued in Redis lapse with this replica's lease."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, CLOSE_TIMEOUT)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self:
                wait = min(self._wake_at, self._next_deadline(), loop.time() + self._renew_every) - loop.time()
                if wait > 0 and not self._cancels:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), wait)
                self._changed.clear()
                await self._round(loop.time())
                await asyncio.sleep(MIN_GAP)
        except BackendError as exc:
            for future in self._waiters.values():
                if not future.done():
                    future.set_exception(exc)
            self._waiters.clear()
            self._makers.clear()

    async def _round(self, now: float) -> None:
        expired = self._expired(now)
        leaving, self._cancels = self._cancels + expired, []
        polled = await self._poll(leaving)
        # Calls granted in one poll wake in their slots' order (the script's answer is in hash order):
        # a grant already due at once would otherwise overtake an earlier one of the same poll.
        for member, granted in sorted(polled.granted.items(), key=_slot_order):
            future = self._waiters.pop(member, None)
            maker = self._makers.pop(member, None) or self._left.get(member)
            if maker is None:
                self._early[member] = granted
            elif future is not None and not future.done():
                future.set_result(maker(granted))
            else:  # its caller left meanwhile
                self._release(maker(granted))
        for member in leaving:  # any grant of theirs came back in this very poll
            self._left.pop(member, None)
        for member in expired:
            future = self._waiters.pop(member, None)
            self._makers.pop(member, None)
            if future is not None and not future.done():
                future.set_result(Refused(retry_after=polled.retry_after))
        self._wake_at = polled.wake

    def _expired(self, now: float) -> list[str]:
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            member = heapq.heappop(self._deadlines)[1]
            if member in self._waiters:
                expired.append(member)
        return expired

    def _next_deadline(self) -> float:
        while self._deadlines and self._deadlines[0][1] not in self._waiters:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else math.inf


def _slot_order(item: tuple[str, Granted]) -> tuple[float, int]:
    return item[1].deadline, item[1].place.tag
