"""Pure GCRA / virtual-scheduling math: which instant a call may be sent at. No I/O, no clock.

Why not aiolimiter: it keeps the bound, but its waiters are a heap ordered by amount and a new
arrival can take a token before already-woken waiters, so under 2x overload calls were reordered by
up to ~1,000 places. Here a call is given its *slot* (the instant it may be sent) when it arrives,
and then sleeps until that instant: the order is FIFO by construction, waiting costs no CPU (one
timer each), and the decision "would the wait exceed ``max_wait``" is known before queueing.

Model (all times are integer microseconds so Python and the Redis Lua script agree exactly):
each bucket has a *theoretical arrival time* ``tat``; a call conforms at ``t`` when
``t >= tat - tolerance``, where ``tolerance = (burst - 1) * interval``; taking a slot ``s`` moves
``tat`` to ``max(tat, s) + interval``. GCRA then guarantees at most ``burst + W / interval`` slots in
any window of length ``W``. A call that needs several buckets takes the latest of their earliest
slots and is charged in every one at that same instant, atomically, so it never holds one bucket's
token while waiting on another.

Headroom: a call is sent a little after its slot (event-loop and network jitter), and a late send
squeezes the gap to the next one. ``Limit.of`` therefore schedules with fewer tokens than the
configured burst: enough to absorb ``JITTER`` seconds of lateness (at least one token, leaving at
least one), which costs nothing in steady-state rate; for ``burst == 1`` it stretches the interval
by 0.5% instead.

Cancellation: a waiter that leaves before its slot gives it back. If it was the last reservation of
the bucket, ``tat`` is rewound (absorbing earlier cancelled slots that become the tail); otherwise
its slot becomes a *hole* that the next arriving call takes, so capacity is not lost.

Cost: a call may take ``c`` tokens at once (a rule's ``cost``, ``x-gateway-cost``). It is the
same GCRA with the call's ``Limit.scaled(c)``: it conforms ``c - 1`` intervals later than a call of
one token and moves ``tat`` by ``c`` intervals. Holes are single slots, so only calls of cost 1 take
them; a cancelled call of cost > 1 rewinds the bucket when it was the last reservation and is
otherwise given up (its capacity is lost, never doubled).

Pause: an upstream that says "stop until P" makes the bucket empty at ``P``: no slot before ``P``,
then one call per interval (no burst right after a throttle). Holes before ``P`` are dropped.

Queued calls (scheduler.py decides their order) take their slot when it comes, with ``head_slot``
and ``take``: the same GCRA, charged at grant time instead of at arrival.

``pacing.lua`` implements exactly these functions for the Redis backend; a test runs both on
the same operations and compares the slots.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

US = 1_000_000
MAX_HOLES = 10_000  # a bound on memory if many waiters cancel out of order; excess holes are dropped
BURST1_PADDING = 1.005
JITTER = 0.010  # seconds of send lateness the headroom absorbs
CATCHUP = int(JITTER * US)  # how far in the past a queued call's slot may lie (see ``head_slot``)


@dataclass(frozen=True)
class Limit:
    """Scheduling parameters of one bucket, in microseconds."""

    interval: int
    tolerance: int
    cost: int = 1

    def scaled(self, cost: int) -> Limit:
        """The schedule of a call taking ``cost`` tokens (see "Cost" above)."""
        if cost == 1:
            return self
        return Limit(self.interval * cost, self.tolerance - (cost - 1) * self.interval, cost)

    @classmethod
    def of(cls, *, rate: float, per: float, burst: int) -> Limit:
        """``rate`` calls per ``per`` seconds with ``burst``, with the jitter headroom described above."""
        interval = per / rate * US
        if burst >= 2:
            headroom = min(burst - 1, max(1, math.ceil(JITTER * US / interval)))
            return cls(interval=math.ceil(interval), tolerance=math.ceil(interval) * (burst - 1 - headroom))
        return cls(interval=math.ceil(interval * BURST1_PADDING), tolerance=0)


@dataclass(slots=True)
class BucketState:
    """Mutable state of one bucket: ``holes`` maps a freed reservation's ``tat`` after it to its slot."""

    tat: int = 0
    paused_until: int = 0
    holes: dict[int, int] = field(default_factory=dict)
    _hole_heap: list[tuple[int, int]] = field(default_factory=list, repr=False)

    def earliest(self, limit: Limit, now: int) -> int:
        """The earliest regular slot (ignoring holes) a call arriving at ``now`` could get."""
        return max(now, self.tat - limit.tolerance, self.paused_until)

    def first_hole(self, now: int) -> tuple[int, int] | None:
        """The earliest hole usable at ``now`` as ``(slot, key)``; drops holes that have passed."""
        floor = max(now, self.paused_until)
        heap = self._hole_heap
        while heap:
            slot, key = heap[0]
            if self.holes.get(key) == slot and slot >= floor:
                return slot, key
            heapq.heappop(heap)
            if self.holes.get(key) == slot:
                del self.holes[key]
        return None

    def add_hole(self, slot: int, key: int) -> None:
        if len(self.holes) < MAX_HOLES:
            self.holes[key] = slot
            heapq.heappush(self._hole_heap, (slot, key))

    def take_hole(self, key: int) -> None:
        self.holes.pop(key, None)


@dataclass(frozen=True)
class Charge:
    """What one reservation took from one bucket: ``key`` is the bucket's ``tat`` right after it."""

    slot: int
    key: int


@dataclass(frozen=True)
class Grant:
    slot: int
    charges: tuple[Charge, ...]


@dataclass(frozen=True)
class Refusal:
    retry_after: int  # microseconds until the slot the call would have had


def reserve(buckets: Sequence[tuple[BucketState, Limit]], now: int, max_wait: int) -> Grant | Refusal:
    """Give a call arriving at ``now`` its slot in every bucket at once, or refuse if beyond ``max_wait``."""
    if len(buckets) == 1 and (not buckets[0][0].holes or buckets[0][1].cost > 1):
        return _reserve_regular(*buckets[0], now, max_wait)
    whole = all(limit.cost == 1 for _, limit in buckets)  # only calls of one token take holes
    regular = max(state.earliest(limit, now) for state, limit in buckets)
    slot = regular
    holes = (s.first_hole(now) for s, _ in buckets) if whole else ()
    for hole_slot in sorted(h[0] for h in holes if h is not None):
        if hole_slot < regular and all(_fits(state, limit, now, hole_slot) for state, limit in buckets):
            slot = hole_slot
            break
    if slot - now > max_wait:
        return Refusal(retry_after=slot - now)
    return Grant(slot=slot, charges=tuple(_charge(state, limit, now, slot) for state, limit in buckets))


def _reserve_regular(state: BucketState, limit: Limit, now: int, max_wait: int) -> Grant | Refusal:
    """The general case above for one bucket without holes (every proxied call of an idle or
    steadily used credential): the same slot and charge, without the generators and sorting."""
    slot = state.earliest(limit, now)
    if slot - now > max_wait:
        return Refusal(retry_after=slot - now)
    if not state.holes:
        state._hole_heap.clear()  # without holes every entry left there is stale
    state.tat = max(state.tat, slot) + limit.interval
    return Grant(slot=slot, charges=(Charge(slot=slot, key=state.tat),))


def take_due(state: BucketState, limit: Limit, now: int) -> bool:
    """``reserve([(state, limit)], now, 0)`` for a bucket without holes when the caller only needs to
    know whether the call goes now: charged and True, or nothing changed and False. The same slot and
    charge as ``_reserve_regular``, without a ``Grant`` and a ``Charge`` (most proxied calls)."""
    slot = state.earliest(limit, now)
    if slot > now:
        return False
    state._hole_heap.clear()  # without holes every entry left there is stale
    state.tat = max(state.tat, slot) + limit.interval
    return True


def _fits(state: BucketState, limit: Limit, now: int, slot: int) -> bool:
    hole = state.first_hole(now)
    return (hole is not None and hole[0] == slot) or state.earliest(limit, now) <= slot


def _charge(state: BucketState, limit: Limit, now: int, slot: int) -> Charge:
    hole = state.first_hole(now) if limit.cost == 1 else None
    if hole is not None and hole[0] == slot:
        state.take_hole(hole[1])
        return Charge(slot=slot, key=hole[1])
    state.tat = max(state.tat, slot) + limit.interval
    return Charge(slot=slot, key=state.tat)


def head_slot(buckets: Sequence[tuple[BucketState, Limit]], arrival: int, now: int, catchup: int = CATCHUP) -> int:
    """The slot the head of a queue may take: when every bucket conforms, never before the call
    arrived, and at most ``catchup`` in the past. A timer that fires a little late thus loses no
    capacity (the slot is taken where it fell, which the jitter headroom covers), while a long
    stall cannot let a burst of past slots go at once. (Redis grants ahead and passes 0.)"""
    due = max(max(state.tat - limit.tolerance, state.paused_until) for state, limit in buckets)
    return max(due, arrival, now - catchup)


def take(buckets: Sequence[tuple[BucketState, Limit]], slot: int) -> tuple[Charge, ...]:
    """Charge a queued call's ``slot`` (from ``head_slot``) in every bucket at once."""
    charges = []
    for state, limit in buckets:
        state.tat = max(state.tat, slot) + limit.interval
        charges.append(Charge(slot=slot, key=state.tat))
    return tuple(charges)


def estimate(buckets: Sequence[tuple[BucketState, Limit]], now: int, ahead: int) -> int:
    """Microseconds a call arriving at ``now`` behind ``ahead`` queued calls would wait."""
    first = max(max(state.tat - limit.tolerance, state.paused_until) for state, limit in buckets)
    return max(0, first - now) + ahead * max(limit.interval for _, limit in buckets)


def release(state: BucketState, limit: Limit, charge: Charge, now: int) -> None:
    """Give back a slot not used: rewind the tail (absorbing holes that become it) or leave a hole."""
    if limit.cost > 1:
        if state.tat == charge.key:
            state.tat -= limit.interval
        return
    if state.tat != charge.key:
        if charge.slot >= now:
            state.add_hole(charge.slot, charge.key)
        return
    state.tat -= limit.interval
    while state.tat in state.holes:
        state.take_hole(state.tat)
        state.tat -= limit.interval


def pause(state: BucketState, limit: Limit, until: int) -> None:
    """No slot before ``until``; then one call per interval (the bucket is empty at ``until``)."""
    state.paused_until = max(state.paused_until, until)
    state.tat = max(state.tat, until + limit.tolerance)


def tokens(state: BucketState, limit: Limit, now: int) -> float:
    """Calls that could be sent right now without waiting (0 while callers are queued or paused)."""
    if state.paused_until > now:
        return 0.0
    capacity = (limit.tolerance + limit.interval) / limit.interval
    return max(0.0, min(capacity, (now - state.tat + limit.tolerance + limit.interval) / limit.interval))


def worst_excess(times: Sequence[float], *, rate: float, per: float, burst: int, slack: float = 0.0) -> float:
    """The guarantee as a check: max over every interval [t_i, t_j] of calls - (burst + rate*T/per).

    ``times`` are the instants (seconds) the upstream saw the calls; a result <= 0 means the bound
    held in every window. ``slack`` widens every window by that many seconds, for measurements
    whose own timing is noisy. O(n): with ``u_k = k - t_k*rate/per`` the excess of [t_i, t_j] is
    ``u_j - u_i + 1 - burst``, so a running minimum of ``u_i`` suffices.
    """
    ordered = sorted(times)
    worst, lowest = -float(burst), math.inf
    for k, t in enumerate(ordered):
        u = k - t * rate / per
        lowest = min(lowest, u)
        worst = max(worst, u - lowest + 1 - burst)
    return worst - slack * rate / per
