"""bucket.py: the scheduling math, on a fake clock (integer microseconds), without sleeping."""

from __future__ import annotations

import random

from gateway.pacing import bucket
from gateway.pacing.bucket import BucketState, Grant, Limit, Refusal

US = bucket.US
NEVER = 10**15


def grant(outcome: Grant | Refusal) -> Grant:
    assert isinstance(outcome, Grant), outcome
    return outcome


def max_in_window(times: list[int], window: int) -> int:
    """The most calls in any closed interval of length ``window`` (two pointers over sorted times)."""
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_headroom_schedules_one_token_less_than_the_burst() -> None:
    """burst >= 2 keeps 10 ms worth of tokens (at least one) as jitter headroom; burst 1 stretches the interval."""
    assert Limit.of(rate=10, per=1, burst=5) == Limit(interval=100_000, tolerance=300_000)
    assert Limit.of(rate=400, per=1, burst=20) == Limit(interval=2_500, tolerance=15 * 2_500)
    assert Limit.of(rate=1000, per=1, burst=3) == Limit(interval=1_000, tolerance=0)
    assert Limit.of(rate=10, per=1, burst=1) == Limit(interval=100_500, tolerance=0)


def test_slots_never_exceed_the_bound_in_any_window() -> None:
    """Random arrivals: in every window of length W at most burst + W/interval slots."""
    rng = random.Random(7)
    limit, state, now, slots = Limit.of(rate=20, per=1, burst=6), BucketState(), 0, []
    for _ in range(2_000):
        now += int(rng.expovariate(1 / 40_000))  # ~25/s offered against 20/s
        slots.append(grant(bucket.reserve([(state, limit)], now, NEVER)).slot)
    for window in (0, 1, 49_999, 50_000, 250_000, 1_000_000, 10_000_000):
        assert max_in_window(slots, window) <= 6 + window * 20 // US


def test_slots_follow_arrival_order() -> None:
    """Under overload, each arrival's slot is later than every earlier arrival's."""
    limit, state = Limit.of(rate=100, per=1, burst=10), BucketState()
    slots = [grant(bucket.reserve([(state, limit)], i * 10, NEVER)).slot for i in range(500)]
    assert slots == sorted(slots)
    assert len(set(slots[9:])) == len(slots[9:])


def test_sustained_demand_gets_the_full_rate() -> None:
    """1,000 calls at once on 50/s with burst 5 finish after (1000 - 4) intervals, the exact rate."""
    limit, state = Limit.of(rate=50, per=1, burst=5), BucketState()
    last = [grant(bucket.reserve([(state, limit)], 0, NEVER)).slot for _ in range(1_000)][-1]
    assert last == (1_000 - 4) * 20_000


def test_a_call_beyond_max_wait_is_refused_without_reserving() -> None:
    """A refusal says how long the wait would have been and leaves the bucket untouched."""
    limit, state = Limit.of(rate=10, per=1, burst=1), BucketState()
    for _ in range(5):
        grant(bucket.reserve([(state, limit)], 0, 500_000))
    before = state.tat
    outcome = bucket.reserve([(state, limit)], 0, 500_000)
    assert isinstance(outcome, Refusal) and outcome.retry_after == 5 * 100_500
    assert state.tat == before


def test_releasing_the_last_reservation_rewinds_the_bucket() -> None:
    """The tail's slot comes back: the next arrival gets the same slot."""
    limit, state = Limit.of(rate=10, per=1, burst=1), BucketState()
    for _ in range(3):
        grant(bucket.reserve([(state, limit)], 0, NEVER))
    tail = grant(bucket.reserve([(state, limit)], 0, NEVER))
    bucket.release(state, limit, tail.charges[0], now=0)
    assert grant(bucket.reserve([(state, limit)], 0, NEVER)).slot == tail.slot


def test_a_released_middle_slot_goes_to_the_next_arrival() -> None:
    """A cancelled waiter in the middle of the queue leaves a hole that the next caller takes."""
    limit, state = Limit.of(rate=10, per=1, burst=1), BucketState()
    granted = [grant(bucket.reserve([(state, limit)], 0, NEVER)) for _ in range(5)]
    bucket.release(state, limit, granted[2].charges[0], now=1)
    assert grant(bucket.reserve([(state, limit)], 2, NEVER)).slot == granted[2].slot
    assert grant(bucket.reserve([(state, limit)], 3, NEVER)).slot == granted[4].slot + limit.interval


def test_releasing_every_waiter_in_any_order_empties_the_queue() -> None:
    """Holes that become the tail are absorbed, so no capacity leaks when everyone leaves."""
    limit, state = Limit.of(rate=10, per=1, burst=3), BucketState()
    granted = [grant(bucket.reserve([(state, limit)], 0, NEVER)) for _ in range(50)]
    random.Random(3).shuffle(granted)
    for g in granted:
        bucket.release(state, limit, g.charges[0], now=0)
    assert not state.holes
    assert bucket.tokens(state, limit, 0) == 2


def test_a_pause_empties_the_bucket_until_its_end() -> None:
    """Nothing before the pause ends, then one call per interval (no burst right after a throttle)."""
    limit, state = Limit.of(rate=10, per=1, burst=5), BucketState()
    bucket.pause(state, limit, until=2 * US)
    slots = [grant(bucket.reserve([(state, limit)], 0, NEVER)).slot for _ in range(3)]
    assert slots == [2 * US, 2 * US + 100_000, 2 * US + 200_000]
    assert bucket.tokens(state, limit, US) == 0


def test_a_call_is_charged_in_every_bucket_at_one_instant() -> None:
    """With a shared bucket too, the slot is the later of the two and both are charged at it."""
    own, shared = Limit.of(rate=100, per=1, burst=2), Limit.of(rate=10, per=1, burst=2)
    mine, theirs = BucketState(), BucketState()
    g1 = grant(bucket.reserve([(mine, own), (theirs, shared)], 0, NEVER))
    g2 = grant(bucket.reserve([(mine, own), (theirs, shared)], 0, NEVER))
    assert (g1.slot, g2.slot) == (0, 100_000)
    assert (mine.tat, theirs.tat) == (110_000, 200_000)


def test_tokens_report_what_is_available_now() -> None:
    """An idle bucket shows its (scheduled) burst; a busy one shows zero."""
    limit, state = Limit.of(rate=10, per=1, burst=4), BucketState()
    assert bucket.tokens(state, limit, 5 * US) == 3
    for _ in range(4):
        grant(bucket.reserve([(state, limit)], 5 * US, NEVER))
    assert bucket.tokens(state, limit, 5 * US) == 0


def test_take_due_decides_and_charges_as_reserve_without_waiting() -> None:
    """The proxy's fast path (``take_due``) against ``reserve(..., max_wait=0)`` on twin states: the same
    answer and the same ``tat`` after every one of 5,000 random arrivals, pauses included."""
    rng = random.Random(7)
    for limit in (
        Limit.of(rate=10, per=1, burst=5),
        Limit.of(rate=1, per=1, burst=1),
        Limit.of(rate=100, per=1, burst=50),
    ):
        fast, general = BucketState(), BucketState()
        now = 0
        for _ in range(5000):
            now += rng.choice((0, 1, limit.interval // 3, limit.interval, 5 * limit.interval))
            if rng.random() < 0.01:
                until = now + rng.randrange(3 * limit.interval)
                for state in (fast, general):
                    bucket.pause(state, limit, until)
            went = bucket.take_due(fast, limit, now)
            outcome = bucket.reserve([(general, limit)], now, 0)
            assert went == isinstance(outcome, Grant)
            assert (fast.tat, fast.paused_until) == (general.tat, general.paused_until)
