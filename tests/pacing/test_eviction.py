"""Idle buckets are forgotten without losing their guarantees.

Memory stays bounded as bucket keys grow (one per credential, per Airtable base), and only a bucket
that is full again (its refill time and any pause over, no freed slot pending) is forgotten: one
still holding calls back is kept, so a call never meets a fresh bucket with a new burst to spend.
"""

from __future__ import annotations

from gateway.pacing.backend import Reservation
from gateway.pacing.limits import BucketLimit
from gateway.pacing.local import SWEEP_FROM, LocalBackend
from gateway.pacing.registry import BucketSpec
from tests.support import FakeClock


def spec(key: str, *, rate: float, burst: int) -> BucketSpec:
    return BucketSpec(key, BucketLimit(rate, 1, burst), key)


def slots(backend: LocalBackend, bucket: BucketSpec, calls: int) -> list[float]:
    """The send instants the backend gives ``calls`` arrivals now."""
    granted = [backend.reserve_now((bucket,), 3600) for _ in range(calls)]
    assert all(isinstance(g, Reservation) for g in granted)
    return [g.deadline for g in granted if isinstance(g, Reservation)]


def pass_many_credentials(backend: LocalBackend, clock: FakeClock, prefix: str) -> None:
    """3x SWEEP_FROM other credentials, one call each, within 0.3 s: each is idle 1 ms after its call."""
    for n in range(3 * SWEEP_FROM):
        slots(backend, spec(f"{prefix}{n}", rate=1000, burst=10), 1)
        clock.now += 0.1 / SWEEP_FROM


def test_a_bucket_still_refilling_is_kept_and_grants_no_new_burst() -> None:
    clock = FakeClock(1000.0)
    swept, untouched = LocalBackend(clock), LocalBackend(clock)
    busy = spec("cred:busy", rate=1, burst=5)
    assert slots(swept, busy, 5) == slots(untouched, busy, 5)  # the burst is spent, the fifth waits
    pass_many_credentials(swept, clock, "cred:")
    assert len(swept) <= SWEEP_FROM  # the idle ones were forgotten: memory does not grow with keys
    assert "cred:busy" in swept
    after = slots(swept, busy, 3)
    assert after == slots(untouched, busy, 3)
    assert min(after) > clock.now + 1  # queued behind the spent burst, as if nothing had been forgotten


def test_a_bucket_full_again_is_forgotten_and_its_return_grants_exactly_a_full_burst() -> None:
    clock = FakeClock(1000.0)
    swept, untouched = LocalBackend(clock), LocalBackend(clock)
    busy = spec("cred:busy", rate=1, burst=5)
    slots(swept, busy, 5)
    slots(untouched, busy, 5)
    clock.now += 10  # longer than the bucket takes to refill
    pass_many_credentials(swept, clock, "cred:")
    assert "cred:busy" not in swept
    assert slots(swept, busy, 8) == slots(untouched, busy, 8)
