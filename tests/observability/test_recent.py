"""The console's in-memory view of recent traffic: a bounded ring of calls and per-credential rates."""

from __future__ import annotations

from gateway.observability.recent import (
    HISTORY_SECONDS,
    MAX_CREDENTIALS,
    RING_SIZE,
    CallRates,
    RecentCall,
    RecentCalls,
    status_matches,
)
from tests.support import FakeClock


def _call(i: int, *, status: int = 200, token: str = "app", credential: str = "cred-1") -> RecentCall:
    return RecentCall(
        at=float(i),
        request_id=f"r{i}",
        token=token,
        credential=credential,
        method="GET",
        path=f"/v1/proxy/credential/{credential}/x/{i}",
        status=status,
        duration_ms=1.0,
        wait_ms=0.0,
        priority="normal",
    )


def test_the_ring_keeps_the_last_thousand_calls_newest_first() -> None:
    """Recording more than 1,000 calls keeps memory bounded and drops the oldest."""
    ring = RecentCalls()
    for i in range(RING_SIZE + 250):
        ring.add(_call(i))
    rows = ring.rows()
    assert len(ring) == len(rows) == RING_SIZE
    assert rows[0].request_id == f"r{RING_SIZE + 249}" and rows[-1].request_id == "r250"


def test_filters_combine() -> None:
    """Credential, token and status (exact or class) filters all apply at once."""
    ring = RecentCalls()
    ring.add(_call(1, status=429, token="a", credential="c1"))
    ring.add(_call(2, status=200, token="a", credential="c1"))
    ring.add(_call(3, status=503, token="b", credential="c2"))
    assert [c.request_id for c in ring.rows(status="4xx")] == ["r1"]
    assert [c.request_id for c in ring.rows(status="5XX", token="b")] == ["r3"]
    assert [c.request_id for c in ring.rows(credential="c1", status="200")] == ["r2"]
    assert ring.rows(status="nonsense") == []


def test_status_matches() -> None:
    assert status_matches(429, "429") and status_matches(429, "4xx") and not status_matches(429, "5xx")
    assert not status_matches(200, "2x") and not status_matches(200, "")


def test_rates_per_second_throttles_and_wait_percentiles() -> None:
    """Calls of the last complete second, throttles of the last minute, nearest-rank p50/p99 of the waits."""
    now = [1000.2]
    rates = CallRates(clock=lambda: now[0])
    for i in range(100):
        rates.record("c", wait_seconds=i / 1000, status=429 if i < 3 else 200)
    now[0] = 1001.5
    summary = rates.summary("c")
    assert summary["calls_per_second"] == 100
    assert summary["throttles"] == 3
    assert (summary["wait_p50_ms"], summary["wait_p99_ms"]) == (49.0, 98.0)
    assert summary["wait_last_ms"] == 99.0
    assert rates.history("c") == [[1000.0, 100, 99.0]]
    assert rates.active("c") and not rates.active("other")
    now[0] = 1100.0  # a minute and more later: nothing in the window, the history still shows it
    later = rates.summary("c")
    assert (later["calls_per_second"], later["throttles"], later["wait_p50_ms"]) == (0, 0, None)
    assert rates.history("c") == [[1000.0, 100, 99.0]]
    now[0] = 1200.0
    assert rates.history("c") == [] and not rates.active("c")


def test_a_failed_attempt_counts_as_a_call_but_not_a_throttle() -> None:
    rates = CallRates(clock=lambda: 5.5)
    rates.record("c", wait_seconds=0.0, status=None)
    assert rates.history("c") == [[5.0, 1, 0.0]]
    assert rates.summary("c")["throttles"] == 0


def test_rates_forget_idle_credentials_and_keep_the_busy_ones_right() -> None:
    """30,000 credentials called one after another: only the last two minutes' stay, capped at MAX_CREDENTIALS."""
    clock = FakeClock(1_000_000.0)
    rates = CallRates(clock=clock)
    for n in range(30_000):
        rates.record(f"c{n}", wait_seconds=0.0, status=200)
        rates.record("busy", wait_seconds=0.002, status=429 if n % 1000 == 0 else 200)
        clock.now += 0.01  # 100 new credentials a second: 12,000 within two minutes, above the cap
        assert len(rates) <= MAX_CREDENTIALS
    assert rates.active("busy") and rates.active("c29999") and not rates.active("c0")
    summary = rates.summary("busy")
    assert summary["calls_per_second"] == 100 and summary["throttles"] == 6 and summary["wait_p50_ms"] == 2.0
    clock.now += HISTORY_SECONDS + 1
    rates.record("late", wait_seconds=0.0, status=200)
    assert len(rates) == 1  # everything else was idle for two minutes
