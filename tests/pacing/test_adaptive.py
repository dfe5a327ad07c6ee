"""adaptive.py: how long an upstream answer asks the pacer to stop, read through the catalog entry."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from gateway.catalog import builtin
from gateway.pacing.adaptive import Pause, parse_duration, pause_for, reset_seconds

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def seconds(provider: str, status: int, headers: Mapping[str, str]) -> float | None:
    pause = pause_for(builtin()[provider].definition.answers, status, headers, NOW)
    return None if pause is None else pause.seconds


def test_retry_after_seconds_on_429() -> None:
    """A 429 with Retry-After in seconds (or fractions, as Shopify sends) pauses that long."""
    assert seconds("stripe", 429, {"Retry-After": "7"}) == 7
    assert seconds("shopify", 429, {"Retry-After": "2.0"}) == 2


def test_retry_after_http_date_on_503() -> None:
    """A 503 with an HTTP-date Retry-After pauses until that date."""
    assert seconds("rest", 503, {"retry-after": "Sun, 01 Mar 2026 12:00:30 GMT"}) == 30


def test_ratelimit_remaining_zero_with_reset() -> None:
    """X-RateLimit-Remaining: 0 pauses until X-RateLimit-Reset (epoch or delta)."""
    assert seconds("rest", 200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(NOW + 12)}) == 12
    assert seconds("rest", 200, {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"}) == 3
    assert seconds("rest", 200, {"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "3"}) is None


def test_hubspot_interval_and_daily_limits() -> None:
    """HubSpot: an exhausted interval pauses one interval, an exhausted day one hour: the day ends at
    midnight in the account's time zone, which no answer tells, so UTC midnight could be hours late."""
    interval = {"X-HubSpot-RateLimit-Remaining": "0", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}
    assert seconds("hubspot", 200, interval) == 10
    assert seconds("hubspot", 200, {"X-HubSpot-RateLimit-Daily-Remaining": "0"}) == 3600


def test_salesforce_slows_down_near_the_allocation() -> None:
    """Sforce-Limit-Info: nothing below 90%, a growing pause above, 60 s when exhausted."""
    assert seconds("salesforce", 200, {"Sforce-Limit-Info": "api-usage=100/5000"}) is None
    assert seconds("salesforce", 200, {"Sforce-Limit-Info": "api-usage=4750/5000"}) == pytest.approx(0.5)
    assert seconds("salesforce", 200, {"Sforce-Limit-Info": "api-usage=5000/5000"}) == 60
    # the connected app's quota, in either order: its own figure, never taken for the org's
    app_spent = "api-usage=25/5000; per-app-api-usage=250/250(appName=sample-connected-app)"
    assert seconds("salesforce", 200, {"Sforce-Limit-Info": app_spent}) == 60
    org_spent = "per-app-api-usage=17/250(appName=sample-connected-app); api-usage=5000/5000"
    assert seconds("salesforce", 200, {"Sforce-Limit-Info": org_spent}) == 60
    fine = "per-app-api-usage=17/250(appName=sample-connected-app); api-usage=100/5000; api-bursts=1/750"
    assert seconds("salesforce", 200, {"Sforce-Limit-Info": fine}) is None


def test_a_bare_throttle_status_uses_the_provider_penalty() -> None:
    """Without headers a 429 still pauses: Airtable's 30 s, Stripe's 1 s; Google's 403 too; a 200 never."""
    assert seconds("airtable", 429, {}) == 30
    assert seconds("stripe", 429, {"Retry-After": "soon"}) == 1
    assert seconds("google", 403, {}) == 5
    assert seconds("stripe", 403, {}) is None
    assert seconds("stripe", 200, {}) is None


def test_shopify_call_limit_and_xero_day_limit() -> None:
    """Shopify's 40/40 waits one leak; Xero's exhausted day (a 24-hour period, no reset instant) an hour."""
    assert seconds("shopify", 200, {"X-Shopify-Shop-Api-Call-Limit": "40/40"}) == 0.5
    assert seconds("shopify", 200, {"X-Shopify-Shop-Api-Call-Limit": "39/40"}) is None
    assert seconds("xero", 200, {"X-MinLimit-Remaining": "3", "X-DayLimit-Remaining": "0"}) == 3600


def test_openai_durations_and_jira_iso_resets() -> None:
    """Reset units from the catalog: OpenAI's Go durations, Jira's ISO 8601 times, ms epochs."""
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    assert seconds("openai", 200, headers) == 360
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_duration("12ms") == pytest.approx(0.012)
    assert parse_duration("soon") is None
    assert reset_seconds("2026-03-01T12:01:00Z", "iso8601", NOW) == 60
    assert reset_seconds(str(int((NOW + 4) * 1000)), "auto", NOW) == pytest.approx(4)


def test_retry_after_is_about_the_call_headers_may_be_credential_wide() -> None:
    """A Retry-After concerns the bucket the call took; an exhausted credential limit the credential."""
    answers = builtin()["github"].definition.answers
    assert pause_for(answers, 429, {"retry-after": "3"}, NOW) == Pause(3, credential_wide=False)
    spent = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 20)}
    assert pause_for(answers, 403, spent, NOW) == Pause(20, credential_wide=True)
