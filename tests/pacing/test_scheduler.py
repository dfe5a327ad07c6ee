"""scheduler.py on a fake clock: strict priority, weighted fair shares, FIFO per tenant and class."""

from __future__ import annotations

import random
from collections import Counter

from gateway.pacing import bucket
from gateway.pacing.bucket import BucketState, Limit
from gateway.pacing.scheduler import Scheduler, Waiter

US = bucket.US
NEVER = 10**15
HIGH, NORMAL, LOW = 0, 1, 2


def push(s: Scheduler[int], cls: int, tenant: str, weight: float = 1, now: int = 0, ticket: int = 0) -> Waiter[int]:
    return s.push(cls, tenant, weight, arrival=now, deadline=NEVER, ticket=ticket)


def drain(s: Scheduler[int], n: int) -> list[Waiter[int]]:
    out = []
    for _ in range(n):
        waiter = s.pop()
        assert waiter is not None
        out.append(waiter)
    return out


def test_a_high_call_goes_before_a_thousand_earlier_low_calls() -> None:
    """Strict priority: whatever arrived first, high, then normal, then low."""
    s: Scheduler[int] = Scheduler()
    for i in range(1000):
        push(s, LOW, f"batch{i % 3}")
    push(s, NORMAL, "app")
    high = push(s, HIGH, "urgent")
    assert s.ahead(HIGH, "other") == 1 and s.position(high) == 0
    assert [w.cls for w in drain(s, 3)] == [HIGH, NORMAL, LOW]
    assert s.depth() == {"high": 0, "normal": 0, "low": 999}


def _shares(weights: dict[str, float], grants: int) -> list[Counter[str]]:
    """Flooding tenants (always 50 queued each): who got each of ``grants`` grants, per 100."""
    s: Scheduler[int] = Scheduler()
    for tenant, weight in weights.items():
        for _ in range(50):
            push(s, NORMAL, tenant, weight)
    windows: list[Counter[str]] = []
    order = []
    for _ in range(grants):
        waiter = s.pop()
        assert waiter is not None
        order.append(waiter.tenant)
        push(s, NORMAL, waiter.tenant, weights[waiter.tenant])  # it keeps flooding
    for start in range(len(order) - 100 + 1):
        windows.append(Counter(order[start : start + 100]))
    return windows


def test_equal_weights_share_every_hundred_grants_half_and_half() -> None:
    for window in _shares({"a": 1, "b": 1}, 2000):
        assert 45 <= window["a"] <= 55


def test_weights_three_to_one_share_three_quarters() -> None:
    for window in _shares({"a": 3, "b": 1}, 2000):
        assert 70 <= window["a"] <= 80


def _simulate(arrivals: list[tuple[int, int, str, float]], limit: Limit) -> list[tuple[Waiter[int], int]]:
    """Drive a scheduler with a GCRA bucket on a fake clock: (arrival µs, class, tenant, weight) ->
    every (waiter, grant time), granting each slot the moment it comes (as the queue's timer does)."""
    s: Scheduler[int] = Scheduler()
    state, pending, now, grants = BucketState(), sorted(arrivals), 0, []
    index = 0
    while index < len(pending) or s:
        head = s.peek()
        slot = NEVER if head is None else bucket.head_slot([(state, limit)], head.arrival, now)
        if index < len(pending) and pending[index][0] <= slot:
            now = max(now, pending[index][0])
            at, cls, tenant, weight = pending[index]
            push(s, cls, tenant, weight, now=at, ticket=index)
            index += 1
            continue
        now = max(now, slot)
        waiter = s.pop()
        assert waiter is not None
        bucket.take([(state, limit)], slot)
        grants.append((waiter, now))
    return grants


def test_a_light_tenant_is_served_within_two_intervals_while_two_others_flood() -> None:
    """20/s: a and b send 40/s each for 20 s; c sends 1/s and waits at most two intervals each time."""
    limit = Limit.of(rate=20, per=1, burst=1)
    arrivals = [(k * 25_000, NORMAL, tenant, 1.0) for k in range(800) for tenant in ("a", "b")]
    arrivals += [(k * US + 7_000, NORMAL, "c", 1.0) for k in range(1, 20)]
    grants = _simulate(arrivals, limit)
    light = [(w, t) for w, t in grants if w.tenant == "c"]
    assert len(light) == 19
    assert max(t - w.arrival for w, t in light) <= 2 * limit.interval
    heavy = [w.tenant for w, t in grants if w.tenant != "c" and t < 15 * US]
    assert abs(heavy.count("a") - heavy.count("b")) <= 2


def test_no_fifo_inversion_within_a_tenant_and_class_over_ten_thousand_grants() -> None:
    """Random classes, tenants, weights, arrivals and cancellations: each tenant+class is served in order."""
    rng = random.Random(3)
    s: Scheduler[int] = Scheduler()
    weights = {f"t{i}": rng.choice([1, 2, 5]) for i in range(7)}
    last: dict[tuple[int, str], int] = {}
    granted = 0
    queued: list[Waiter[int]] = []
    while granted < 10_000:
        for _ in range(rng.randint(0, 2)):
            tenant = rng.choice(list(weights))
            queued.append(push(s, rng.choice([HIGH, NORMAL, NORMAL, LOW]), tenant, weights[tenant]))
        if queued and rng.random() < 0.1:
            assert s.remove(queued.pop(rng.randrange(len(queued))))
        waiter = s.pop()
        if waiter is None:
            continue
        granted += 1
        assert waiter.seq > last.get((waiter.cls, waiter.tenant), -1)
        last[(waiter.cls, waiter.tenant)] = waiter.seq
        queued.remove(waiter)


def test_a_tenant_asking_less_than_its_share_gets_all_it_asks() -> None:
    """Max-min fair: c asks for 10% of a 20/s bucket that a floods; c gets every call, a the rest."""
    limit = Limit.of(rate=20, per=1, burst=1)
    arrivals = [(0, NORMAL, "a", 1.0)] * 400 + [(k * 500_000, NORMAL, "c", 1.0) for k in range(20)]
    grants = _simulate(arrivals, limit)
    first_ten_seconds = Counter(w.tenant for w, t in grants if t < 10 * US)
    assert first_ten_seconds["c"] == 20
    assert first_ten_seconds["a"] >= 20 * 10 * 0.99 - 20 - 1


def test_deadlines_expire_and_removal_frees_the_place() -> None:
    s: Scheduler[int] = Scheduler()
    early = s.push(NORMAL, "a", 1, arrival=0, deadline=100, ticket=1)
    late = s.push(NORMAL, "a", 1, arrival=0, deadline=200, ticket=2)
    third = push(s, NORMAL, "b")
    assert s.next_deadline() == 100
    assert s.expired(150) == [early]
    assert (s.position(third), s.position(late)) == (0, 1)  # b starts at the virtual time, a after its first
    assert s.remove(late) and not s.remove(late)
    assert s.next_deadline() == NEVER and s.position(third) == 0
    assert s.pop() is third and s.pop() is None and len(s) == 0
