"""adaptive.py: how long an upstream answer asks the pacer to stop, per provider."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.pacing.adaptive import pause_for

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def test_retry_after_seconds_on_429() -> None:
    """A 429 with Retry-After in seconds pauses that long."""
    assert pause_for("stripe", 429, {"Retry-After": "7"}, NOW) == 7


def test_retry_after_http_date_on_503() -> None:
    """A 503 with an HTTP-date Retry-After pauses until that date."""
    assert pause_for("rest", 503, {"retry-after": "Sun, 01 Mar 2026 12:00:30 GMT"}, NOW) == 30


def test_ratelimit_remaining_zero_with_reset() -> None:
    """X-RateLimit-Remaining: 0 pauses until X-RateLimit-Reset (epoch or delta)."""
    assert pause_for("rest", 200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(NOW + 12)}, NOW) == 12
    assert pause_for("rest", 200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"}, NOW) == 3
    assert pause_for("rest", 200, {"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "3"}, NOW) is None


def test_hubspot_interval_and_daily_limits() -> None:
    """HubSpot: an exhausted interval pauses one interval, an exhausted day until UTC midnight."""
    interval = {"X-HubSpot-RateLimit-Remaining": "0", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}
    assert pause_for("hubspot", 200, interval, NOW) == 10
    assert pause_for("hubspot", 200, {"X-HubSpot-RateLimit-Daily-Remaining": "0"}, NOW) == 12 * 3600


def test_salesforce_slows_down_near_the_allocation() -> None:
    """Sforce-Limit-Info: nothing below 90%, a growing pause above, 60 s when exhausted."""
    assert pause_for("salesforce", 200, {"Sforce-Limit-Info": "api-usage=100/5000"}, NOW) is None
    assert pause_for("salesforce", 200, {"Sforce-Limit-Info": "api-usage=4750/5000"}, NOW) == pytest.approx(0.5)
    assert pause_for("salesforce", 200, {"Sforce-Limit-Info": "api-usage=5000/5000"}, NOW) == 60


def test_a_bare_429_uses_the_provider_penalty() -> None:
    """Without headers a 429 still pauses: Airtable's 30 s, others 1 s; a 200 never does."""
    assert pause_for("airtable", 429, {}, NOW) == 30
    assert pause_for("stripe", 429, {"Retry-After": "soon"}, NOW) == 1
    assert pause_for("stripe", 200, {}, NOW) is None
