"""Who gets a bucket's next slot: strict priority classes, weighted fair queuing, FIFO per tenant.

Pure: no I/O, no clock (times are integer microseconds passed in), so it is tested as plain
functions with a fake clock, and pacing.lua runs the same rules in Redis.

The GCRA of bucket.py decides *when* a slot exists (that is the bound); this module decides *who*
takes it, among the calls queued on the bucket:

- Strict priority: a ``high`` call is granted before any ``normal`` or ``low`` call, whatever their
  arrival; ``low`` only when neither ``high`` nor ``normal`` waits.
- Inside a class, start-time fair queuing between tenants: each call gets a virtual *start tag*
  ``max(V, the tenant's last finish)`` and moves the tenant's finish to ``start + SCALE // weight``;
  the call with the smallest start tag goes first, and ``V`` becomes that tag. Backlogged tenants
  therefore share the grants in proportion to their weights, and a tenant that asks for less than
  its share starts at ``V`` every time and is served within about one round (max-min fair): it
  cannot bank credit while idle, nor be charged for the others' backlog.
- FIFO inside a tenant and class: its tags strictly increase, and ties go to the earlier arrival.

Tags are integers (``SCALE`` per call at weight 1) so Python and Lua compute identical orders.
A class's virtual time and tenant table restart from zero whenever the class runs empty.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

Priority = Literal["high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = ("high", "normal", "low")
SCALE = 1_000_000  # virtual units per call of a weight-1 tenant
T = TypeVar("T")


def step(weight: float) -> int:
    """The virtual cost of one call of a tenant of ``weight`` (at least 1 unit)."""
    return max(1, round(SCALE / weight))


@dataclass(eq=False)
class Waiter(Generic[T]):
    """One queued call; ``ticket`` is whatever its owner needs to answer it (a future, an id)."""

    cls: int
    tenant: str
    start: int
    seq: int
    arrival: int
    deadline: int
    ticket: T

    @property
    def key(self) -> tuple[int, int]:
        return (self.start, self.seq)


@dataclass
class _Class(Generic[T]):
    """One priority class: its virtual time, each tenant's last finish tag, the calls in tag order."""

    virtual: int = 0
    finish: dict[str, int] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    keys: list[tuple[int, int]] = field(default_factory=list)
    waiters: dict[int, Waiter[T]] = field(default_factory=dict)

    def tag(self, tenant: str) -> int:
        return max(self.virtual, self.finish.get(tenant, 0))


class Scheduler(Generic[T]):
    """The queue of one bucket. ``push`` adds a call, ``pop`` takes the one the next slot goes to."""

    def __init__(self) -> None:
        self._classes: tuple[_Class[T], ...] = tuple(_Class() for _ in PRIORITIES)
        self._deadlines: list[tuple[int, int, Waiter[T]]] = []
        self._seq = 0
        self._entries = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def depth(self) -> dict[Priority, int]:
        """Calls queued per class."""
        return {name: len(c.keys) for name, c in zip(PRIORITIES, self._classes, strict=True)}

    def ahead(self, cls: int, tenant: str) -> int:
        """How many queued calls a call of ``cls`` and ``tenant`` arriving now would wait behind."""
        queue = self._classes[cls]
        higher = sum(len(c.keys) for c in self._classes[:cls])
        return higher + bisect.bisect_left(queue.keys, (queue.tag(tenant), self._seq))

    def position(self, waiter: Waiter[T]) -> int:
        """How many queued calls would be granted before ``waiter`` if nothing else arrived."""
        higher = sum(len(c.keys) for c in self._classes[: waiter.cls])
        return higher + bisect.bisect_left(self._classes[waiter.cls].keys, waiter.key)

    def push(self, cls: int, tenant: str, weight: float, *, arrival: int, deadline: int, ticket: T) -> Waiter[T]:
        queue = self._classes[cls]
        start = queue.tag(tenant)
        queue.finish[tenant] = start + step(weight)
        waiter = Waiter(cls, tenant, start, self._seq, arrival, deadline, ticket)
        self._seq += 1
        return self._insert(waiter)

    def rejoin(self, waiter: Waiter[T], *, deadline: int) -> Waiter[T]:
        """Queue again a call that was granted but could not use its slot (on Redis: woken too late).

        It keeps its sequence and arrival and its tag, capped at ``V`` (0 if its class ran empty
        since), so it is the head of its class again, ahead of every call that arrived after it; its
        tenant's finish already counts it. pacing.lua's rejoin does the same.
        """
        start = min(waiter.start, self._classes[waiter.cls].virtual)
        return self._insert(dataclasses.replace(waiter, start=start, deadline=deadline))

    def _insert(self, waiter: Waiter[T]) -> Waiter[T]:
        queue = self._classes[waiter.cls]
        bisect.insort(queue.keys, waiter.key)
        queue.waiters[waiter.seq] = waiter
        queue.counts[waiter.tenant] += 1
        self._entries += 1  # not the sequence: a rejoined call's stale entry keeps its sequence
        heapq.heappush(self._deadlines, (waiter.deadline, self._entries, waiter))
        self._size += 1
        return waiter

    def peek(self) -> Waiter[T] | None:
        for queue in self._classes:
            if queue.keys:
                return queue.waiters[queue.keys[0][1]]
        return None

    def pop(self) -> Waiter[T] | None:
        """Take the call the next slot goes to (the head of the highest non-empty class)."""
        waiter = self.peek()
        if waiter is not None:
            queue = self._classes[waiter.cls]
            queue.virtual = max(queue.virtual, waiter.start)
            self._drop(waiter, 0)
        return waiter

    def remove(self, waiter: Waiter[T]) -> bool:
        """Take a call out (cancelled, or past its deadline); False if it was no longer queued."""
        queue = self._classes[waiter.cls]
        if queue.waiters.get(waiter.seq) is not waiter:
            return False
        self._drop(waiter, bisect.bisect_left(queue.keys, waiter.key))
        return True

    def expired(self, now: int) -> list[Waiter[T]]:
        """Remove and return the calls whose deadline has come."""
        gone: list[Waiter[T]] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            waiter = heapq.heappop(self._deadlines)[2]
            if self.remove(waiter):
                gone.append(waiter)
        return gone

    def next_deadline(self) -> int | None:
        """The earliest deadline of a queued call (drops entries of calls already gone)."""
        while self._deadlines:
            waiter = self._deadlines[0][2]
            if self._classes[waiter.cls].waiters.get(waiter.seq) is waiter:
                return self._deadlines[0][0]
            heapq.heappop(self._deadlines)
        return None

    def _drop(self, waiter: Waiter[T], index: int) -> None:
        queue = self._classes[waiter.cls]
        del queue.keys[index]
        del queue.waiters[waiter.seq]
        self._size -= 1
        queue.counts[waiter.tenant] -= 1
        if not queue.counts[waiter.tenant]:
            del queue.counts[waiter.tenant]
            if queue.finish.get(waiter.tenant, 0) <= queue.virtual:
                queue.finish.pop(waiter.tenant, None)
        if not queue.keys:
            queue.virtual = 0
            queue.finish.clear()
        if not self._size:
            self._deadlines.clear()


@dataclass(frozen=True)
class Share:
    """What a call brings to the queue: its class, its tenant (the API token's name) and its weight."""

    priority: Priority = "normal"
    tenant: str = ""
    weight: float = 1.0

    @property
    def cls(self) -> int:
        return PRIORITIES.index(self.priority)


DEFAULT_SHARE = Share()
