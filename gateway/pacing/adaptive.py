"""How long an upstream answer asks us to stop: pure header parsing, one rule set per provider.

The pacer pauses the call's bucket for the returned number of seconds, for every caller (and, with
the Redis backend, every replica). Rules, first match wins:

1. ``429`` or ``503`` with ``Retry-After`` (seconds or an HTTP date): that long.
2. Exhaustion reported in headers: ``X-RateLimit-Remaining: 0`` with ``X-RateLimit-Reset`` (epoch
   seconds, or seconds from now when small); HubSpot's ``X-HubSpot-RateLimit-Remaining: 0`` (the
   rest of ``...-Interval-Milliseconds``), ``...-Secondly-Remaining: 0`` (one second) and
   ``...-Daily-Remaining: 0`` (until the next UTC midnight, an approximation of the account's day).
3. Salesforce ``Sforce-Limit-Info: api-usage=N/M``: from 90% of M a pause growing to 1 s per call
   as N approaches M (the allocation refills over 24 h, so the pacer slows down instead of
   stopping dead), and 60 s once N >= M.
4. ``429`` without any of the above: the provider's customary penalty (Airtable asks for 30 s), else 1 s.

A pause and a resend are different things: every rule above pauses the bucket for the calls after
this one, but only a *refusal* (``is_refusal``) may be sent again. A ``200`` that reports exhaustion
was carried out upstream; sending it again would repeat a write.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

DEFAULT_429_PAUSE = 1.0
PROVIDER_429_PAUSE = {"airtable": 30.0}
SALESFORCE_SLOWDOWN_FROM = 0.9
SALESFORCE_EXHAUSTED_PAUSE = 60.0
MAX_PAUSE = 86_400.0
_API_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
_EPOCH_THRESHOLD = 1_000_000_000  # larger reset values are unix timestamps, smaller ones are deltas


def pause_for(provider: str, status: int, headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to pause after this answer (``now`` is unix time), or None to carry on."""
    headers = {name.lower(): value for name, value in headers.items()}
    pause: float | None = None
    if status in (429, 503):
        pause = retry_after(headers.get("retry-after"), now)
    if pause is None:
        pause = _exhaustion(provider, headers, now)
    if pause is None and status == 429:
        pause = PROVIDER_429_PAUSE.get(provider, DEFAULT_429_PAUSE)
    return None if pause is None else min(max(pause, 0.0), MAX_PAUSE)


def is_refusal(status: int, headers: Mapping[str, str]) -> bool:
    """Whether the upstream refused the call (so it did nothing): 429, or 503 with ``Retry-After``.

    Only a refusal may be sent again; any other answer, however exhausted its headers, is final.
    """
    if status == 429:
        return True
    return status == 503 and any(name.lower() == "retry-after" for name in headers)


def retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _exhaustion(provider: str, headers: Mapping[str, str], now: float) -> float | None:
    if provider == "hubspot":
        return _hubspot(headers, now)
    if provider == "salesforce":
        return _salesforce(headers.get("sforce-limit-info"))
    if _int(headers.get("x-ratelimit-remaining")) == 0:
        reset = _number(headers.get("x-ratelimit-reset"))
        if reset is not None:
            return reset - now if reset > _EPOCH_THRESHOLD else reset
    return None


def _hubspot(headers: Mapping[str, str], now: float) -> float | None:
    if _int(headers.get("x-hubspot-ratelimit-daily-remaining")) == 0:
        day = datetime.fromtimestamp(now, UTC).date() + timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() - now
    if _int(headers.get("x-hubspot-ratelimit-remaining")) == 0:
        interval = _number(headers.get("x-hubspot-ratelimit-interval-milliseconds"))
        return 10.0 if interval is None else interval / 1000
    if _int(headers.get("x-hubspot-ratelimit-secondly-remaining")) == 0:
        return 1.0
    return None


def _salesforce(info: str | None) -> float | None:
    match = _API_USAGE.search(info or "")
    if match is None or int(match.group(2)) <= 0:
        return None
    used = int(match.group(1)) / int(match.group(2))
    if used >= 1:
        return SALESFORCE_EXHAUSTED_PAUSE
    if used >= SALESFORCE_SLOWDOWN_FROM:
        return (used - SALESFORCE_SLOWDOWN_FROM) / (1 - SALESFORCE_SLOWDOWN_FROM)
    return None


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    number = _number(value)
    return None if number is None else int(number)
