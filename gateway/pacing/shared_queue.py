"""This replica's calls waiting in a Redis-held bucket queue: one poller task per bucket, not per call.

The queue itself (who is next, when the next slot is due) lives in Redis (pacing.lua); a replica only
keeps a future per queued caller and polls when something can change for them: at the instant the
next grant is due (the script says when), at the earliest ``max_wait`` deadline of its callers, when
one of its callers leaves, and at least every third of the lease so its places stay alive. Each poll
collects the places that any replica granted to this one, removes the cancelled ones, and grants
what is due. The script charges each place on its own buckets and cost (and its ``max_concurrency``
permit).

Lanes: callers and places are kept apart. A lane is this replica's calls of one queue that are
interchangeable for Redis: same buckets, cost, class, tenant, weight and permit set, so the script
treats them alike and orders them FIFO. Each caller adds one place (a member of the Redis queue) to
its lane; a slot granted to any place of the lane goes, when it comes, to the lane's first caller.
The slot times are the script's, whichever caller takes them, so the bound is the GCRA's; and the
callers of a lane are served in arrival order whatever happens to the places:

- a slot this replica wakes up for later than the headroom of its buckets allows after it (10 ms
  at least; a whole interval for buckets slower than 100/s: ``BucketLimit.lateness``) is not sent
  (the other replicas went on time, and a late send would squeeze their calls): it is given back to
  the bucket and its place rejoins the Redis queue at its old start tag, the head again. The first
  caller keeps waiting and takes the next slot of the lane that comes on time, so a later caller
  never goes first (before lanes, the caller of the late slot rejoined while the later callers of its
  replica went on their own slots). The caller checks again when it runs (``again``): a busy loop
  between the timer and the caller makes the slot just as late. Callers found too late so wait
  again at the front in their arrival order (their ``ticket``), and a later caller that runs on
  time gives its slot to the earliest of them and waits in its stead (``hand_over``): one stall
  can make the earlier slot too late and the later one not. Only a caller earlier than the one
  running takes its slot, so a slot handed over is never handed back (two callers once passed one
  slot to and fro for ever). A lane forgotten while its last caller ran (nothing else was in it)
  is made again for a caller that waits again: the poller serves only the lanes it knows;
- slots that come out of order in loop time (grants of one poll answered in hash order, a clock
  offset that shrank between two polls) still go to the callers in order;
- a caller that leaves (cancelled, or its ``max_wait`` ran out) takes the lane's newest place with
  it: a queued place leaves the Redis queue at the next poll, a granted one gives its slot back, one
  still on its way is dropped when it lands. Callers and places stay one to one;
- a replica that dies takes its lanes with it. Its places stay in the Redis queue, in their order,
  only while its lease lives (renewed by its polls), and are passed over once it is 50 ms late for
  a poll (redis.py): they hold nobody back, and are dropped unanswered once the lease lapses.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from gateway.pacing.backend import BackendError, Place, Refused, Reservation
from gateway.pacing.bucket import JITTER, Charge

MIN_GAP = 0.001  # seconds between two polls of one queue: the clock offset is an estimate
CLOSE_TIMEOUT = 2.0
LATE = JITTER  # the least lateness a lane allows (``BucketLimit.lateness``): the jitter headroom


@dataclass(frozen=True)
class Granted:
    """One grant as the script reports it: ``charges`` in the place's own buckets, ``deadline`` in loop time."""

    place: Place
    charges: tuple[Charge, ...]
    deadline: float


@dataclass(frozen=True)
class Queued:
    """A place queued in Redis: ``wake`` is the loop time of the next grant the script foresaw."""

    member: str
    wake: float


Entered = Granted | Queued | Refused | BackendError  # what the script made of a place entering
Maker = Callable[[Granted], Reservation]  # a caller's reservation from a grant (its buckets, its permit)


@dataclass(frozen=True)
class Polled:
    """One poll's answer: places granted to this replica (member -> grant), next grant (loop time)."""

    granted: dict[str, Granted]
    wake: float
    retry_after: float


Poll = Callable[[list[str]], Awaitable[Polled]]
K = TypeVar("K", bound=Hashable)


@dataclass(eq=False)
class Lane(Generic[K]):
    """This replica's interchangeable calls in one queue (see the module docstring)."""

    key: K  # the backend's: what it needs to enter a place again
    maker: Maker
    late: float = LATE  # seconds after its slot a call may still go (the buckets' headroom)
    # waiting callers -> their deadline, in arrival order (a cancelled one stays until ``leave``)
    callers: OrderedDict[asyncio.Future[Reservation | Refused], float] = field(default_factory=OrderedDict)
    queued: list[str] = field(default_factory=list)  # places queued in Redis, sorted: the newest last
    held: dict[str, tuple[Granted, asyncio.TimerHandle]] = field(default_factory=dict)  # granted, not due
    entering: int = 0  # places on their way into Redis (arrivals, rejoins)
    surplus: int = 0  # places whose callers left, to drop as soon as they can be
    # callers waiting again (``again``, ``hand_over``) -> their arrival ticket, at the front of
    # ``callers`` in ticket order: they were handed slots, so they came before any caller never handed one
    retried: dict[asyncio.Future[Reservation | Refused], int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.callers or self.queued or self.held or self.entering or self.surplus)

    def budget(self, now: float) -> float:
        """Seconds the newest caller may still wait: a place rejoining is that caller's in the end."""
        return max(0.0, next(reversed(self.callers.values())) - now) if self.callers else 0.0

    def first(self) -> asyncio.Future[Reservation | Refused] | None:
        """The first caller still waiting; cancelled ones met on the way leave now (their places go)."""
        return self._live(newest=False)

    def newest(self) -> asyncio.Future[Reservation | Refused] | None:
        """The newest caller still waiting (cancelled ones met on the way leave now)."""
        return self._live(newest=True)

    def _live(self, *, newest: bool) -> asyncio.Future[Reservation | Refused] | None:
        while self.callers:
            future = next(reversed(self.callers)) if newest else next(iter(self.callers))
            if not future.done():
                return future
            del self.callers[future]
            self.surplus += 1
        return None


class SharedQueue(Generic[K]):
    """The lanes of this replica in one Redis bucket queue. ``rejoin`` gives a late grant back, then
    enters its place again (``entered`` follows)."""

    def __init__(
        self,
        poll: Poll,
        release: Callable[[Reservation], None],
        rejoin: Callable[[Lane[K], Granted], None],
        renew_every: float,
    ) -> None:
        self._poll = poll
        self._release = release
        self._rejoin = rejoin
        self._renew_every = renew_every
        self._lanes: dict[K, Lane[K]] = {}
        self._members: dict[str, Lane[K]] = {}  # queued places -> their lane
        self._deadlines: list[tuple[float, int, Lane[K], asyncio.Future[Reservation | Refused]]] = []
        self._order = itertools.count()
        self._cancels: list[str] = []
        self._dropped: dict[str, Lane[K]] = {}  # places taken out: a grant still on its way is given back
        self._early: dict[str, Granted] = {}  # granted before the arrival's own answer was read
        self._wake_at = math.inf
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def __bool__(self) -> bool:
        return bool(self._cancels) or any(lane.callers for lane in self._lanes.values())

    @property
    def idle(self) -> bool:
        """No lane, nothing leaves, no grant waits for its caller, no poll runs: the queue may go.

        ``_dropped`` is not looked at: it is emptied by the poll that takes those places out, and what
        stays in it was in a poll that failed (Redis down); a grant of theirs arriving later is then
        not given back by this replica, and their places lapse with its lease.
        """
        return not (self._lanes or self._cancels or self._early) and (self._task is None or self._task.done())

    def lane(self, key: K, maker: Maker, late: float = LATE) -> Lane[K]:
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane(key, maker, late)
        return lane

    def join(self, lane: Lane[K], deadline: float) -> asyncio.Future[Reservation | Refused]:
        """A caller whose place is on its way (``entered`` follows): it waits for the lane's turn."""
        future: asyncio.Future[Reservation | Refused] = asyncio.get_running_loop().create_future()
        lane.callers[future] = deadline
        lane.entering += 1
        heapq.heappush(self._deadlines, (deadline, next(self._order), lane, future))
        return future

    def again(
        self, lane: Lane[K], reservation: Reservation, deadline: float, ticket: int
    ) -> asyncio.Future[Reservation | Refused]:
        """A caller (arrival ``ticket``) handed a slot found it too late when it ran (the loop was busy
        in between): the slot goes back as a late one does, and the caller waits again, first but for
        the earlier callers waiting again. ``lane``: ``lane(key)`` now, not the one it joined."""
        future = self.join(lane, deadline)
        self._retry(lane, future, ticket)
        assert reservation.place is not None
        self._rejoin(lane, Granted(reservation.place, reservation.charges, reservation.deadline))
        return future

    def overtaking(self, key: K, ticket: int) -> bool:
        """Whether the caller of arrival ``ticket``, running with a slot on time, would go before an
        earlier caller of its lane waiting again (the stall that made that one's slot too late may
        have spared this one's)."""
        lane = self._lanes.get(key)
        return lane is not None and min(self._waiting_again(lane).values(), default=ticket) < ticket

    def hand_over(
        self, lane: Lane[K], reservation: Reservation, deadline: float, ticket: int
    ) -> asyncio.Future[Reservation | Refused]:
        """Give a slot on time to the lane's earliest caller waiting again (``overtaking``), and wait in
        its stead at ``ticket``: that caller's place, on its way back, stands for this one's."""
        retried = self._waiting_again(lane)
        earliest = min(retried, key=retried.__getitem__)
        del lane.callers[earliest], retried[earliest]
        earliest.set_result(reservation)
        future: asyncio.Future[Reservation | Refused] = asyncio.get_running_loop().create_future()
        lane.callers[future] = deadline
        heapq.heappush(self._deadlines, (deadline, next(self._order), lane, future))
        self._retry(lane, future, ticket)
        return future

    @staticmethod
    def _waiting_again(lane: Lane[K]) -> dict[asyncio.Future[Reservation | Refused], int]:
        """``lane.retried`` without the callers served or gone since."""
        lane.retried = {f: t for f, t in lane.retried.items() if f in lane.callers and not f.done()}
        return lane.retried

    def _retry(self, lane: Lane[K], future: asyncio.Future[Reservation | Refused], ticket: int) -> None:
        """Put ``future`` (arrival ``ticket``) at the front of the lane's callers, in ticket order with
        the others waiting again."""
        retried = self._waiting_again(lane)
        retried[future] = ticket
        for earlier in sorted(retried, key=retried.__getitem__, reverse=True):
            lane.callers.move_to_end(earlier, last=False)

    def entered(self, lane: Lane[K], outcome: Entered) -> None:
        """What the script made of a place of ``lane`` entering (an arrival, or a late grant rejoining)."""
        lane.entering -= 1
        newest = lane.newest()
        if newest is None and not lane.surplus:  # its callers failed (Redis down): nobody's place
            lane.surplus = 1
        if isinstance(outcome, Queued):
            self._queued(lane, outcome)
        elif isinstance(outcome, Granted):
            self._hold(lane, outcome)
        elif lane.surplus:  # no place came of it, and one was to go anyway
            lane.surplus -= 1
        elif newest is not None:  # a caller too many: the newest (refused, or told the backend failed)
            del lane.callers[newest]
            if isinstance(outcome, Refused):
                newest.set_result(outcome)
            else:
                newest.set_exception(outcome)
        self._forget_if_empty(lane)

    def leave(self, lane: Lane[K], future: asyncio.Future[Reservation | Refused]) -> None:
        """The caller went away (cancelled): its lane's newest place goes with it."""
        if lane.callers.pop(future, None) is not None:
            lane.surplus += 1
            self._settle(lane)

    def nudge(self) -> None:
        """Poll now if calls wait (a permit came back in this replica)."""
        self._changed.set()
        self._start()

    def _queued(self, lane: Lane[K], outcome: Queued) -> None:
        early = self._early.pop(outcome.member, None)
        if early is not None:  # a poll on another connection answered first
            self._hold(lane, early)
            return
        bisect.insort(lane.queued, outcome.member)
        self._members[outcome.member] = lane
        self._settle(lane)
        self._wake_at = min(self._wake_at, outcome.wake)
        self._changed.set()
        self._start()

    def _hold(self, lane: Lane[K], granted: Granted) -> None:
        """A slot granted to a place of ``lane``: due at its deadline, to the lane's first caller."""
        member = granted.place.member
        if self._members.pop(member, None) is not None:
            del lane.queued[bisect.bisect_left(lane.queued, member)]
        if lane.surplus:
            lane.surplus -= 1
            self._release(lane.maker(granted))
            return
        loop = asyncio.get_running_loop()
        if granted.deadline <= loop.time():  # due already (granted at once, or the answer came late)
            self._go(lane, granted)
        else:
            lane.held[member] = (granted, loop.call_at(granted.deadline, self._due, lane, member))

    def _due(self, lane: Lane[K], member: str) -> None:
        granted, _ = lane.held.pop(member)
        self._go(lane, granted)

    def _go(self, lane: Lane[K], granted: Granted) -> None:
        """A slot of ``lane`` comes: its first caller goes, unless this replica woke too late for it."""
        first = lane.first()
        late = asyncio.get_running_loop().time() - granted.deadline > lane.late
        if first is not None and not late:
            del lane.callers[first]
            first.set_result(lane.maker(granted))
        elif lane.surplus or first is None:  # this place was to go anyway
            lane.surplus = max(0, lane.surplus - 1)
            self._release(lane.maker(granted))
        else:
            lane.entering += 1
            self._rejoin(lane, granted)
        self._settle(lane)

    def _settle(self, lane: Lane[K]) -> None:
        """Drop the newest places of callers that left: queued ones first (no slot taken yet), then
        granted ones (their slots go back); places on their way are dropped when they land."""
        while lane.surplus and (lane.queued or lane.held):
            lane.surplus -= 1
            if lane.queued:
                member = lane.queued.pop()  # "sequence|...": the newest arrival
                self._members.pop(member, None)
                self._dropped[member] = lane
                self._cancels.append(member)
                self._changed.set()
                self._start()
            else:
                member = max(lane.held, key=lambda m: lane.held[m][0].deadline)
                granted, timer = lane.held.pop(member)
                timer.cancel()
                self._release(lane.maker(granted))
        self._forget_if_empty(lane)

    def _forget_if_empty(self, lane: Lane[K]) -> None:
        if lane.empty and self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]

    def _start(self) -> None:
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop polling for good; the places still queued in Redis lapse with this replica's lease."""
        self._closed = True
        for lane in self._lanes.values():
            for _, timer in lane.held.values():
                timer.cancel()
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
        except BackendError as exc:  # every caller fails over; the places lapse with the lease
            self._cancels.clear()
            self._members.clear()
            for lane in list(self._lanes.values()):
                for future in lane.callers:
                    if not future.done():
                        future.set_exception(exc)
                for _, timer in lane.held.values():
                    timer.cancel()
                lane.callers.clear()
                lane.held.clear()
                lane.queued.clear()
                lane.surplus = 0
                self._forget_if_empty(lane)

    async def _round(self, now: float) -> None:
        expired = self._expired(now)
        for lane, future in expired:  # their places leave in this very poll
            self.leave(lane, future)
        leaving, self._cancels = self._cancels, []
        polled = await self._poll(leaving)
        for member, granted in polled.granted.items():
            if (owner := self._members.get(member)) is not None:
                self._hold(owner, granted)
            elif (gone := self._dropped.get(member)) is not None:  # granted before its cancellation reached Redis
                self._release(gone.maker(granted))
            else:  # the arrival's own answer is still on its way
                self._early[member] = granted
        for member in leaving:  # any grant of theirs came back in this very poll
            self._dropped.pop(member, None)
        for _, future in expired:
            if not future.done():  # not cancelled meanwhile
                future.set_result(Refused(retry_after=polled.retry_after))
        self._wake_at = polled.wake

    def _expired(self, now: float) -> list[tuple[Lane[K], asyncio.Future[Reservation | Refused]]]:
        expired = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, lane, future = heapq.heappop(self._deadlines)
            if not future.done() and future in lane.callers:
                expired.append((lane, future))
        return expired

    def _next_deadline(self) -> float:
        while self._deadlines and self._deadlines[0][3].done():
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else math.inf
