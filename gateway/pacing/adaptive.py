"""How long an upstream answer asks us to stop, read through the provider's catalog entry. Pure.

The entry's ``answers`` say which statuses are refusals, where ``Retry-After`` is, which headers
report which limit and in what unit their reset comes (domain/catalog.py). Rules, first match wins:

1. A throttle status (429 by default, or 503) with ``Retry-After`` (seconds, ms, or an HTTP date):
   that long. It is about the bucket the call took (a rule's, when one matched), not credential-wide.
2. Limits reported as exhausted in the headers (``answers.headers``): the longest of their pauses
   (until their reset, or their window, or the next UTC midnight, or a slowdown as a daily
   allocation nears its end); credential-wide when any such limit is declared credential-wide.
3. An answer whose body the entry's ``answers.bodies`` name (Salesforce's 403 ``REQUEST_LIMIT_EXCEEDED``:
   its spent 24-hour allocation pauses an hour, then it is asked again): that signal's pause,
   credential-wide. The upstream client reads the body (its first ``BODY_HEAD`` bytes) for those
   statuses only, and relays it as it came.
4. A throttle status with none of these: the entry's ``penalty`` (Airtable asks for 30 s).

A pause and a resend are different things: every rule above pauses the bucket for the calls after
this one, but only a *refusal* (``is_refusal``) may be sent again. A ``200`` that reports exhaustion
was carried out upstream; sending it again would repeat a write.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.domain.catalog import Answers, Signal

MAX_PAUSE = 86_400.0
BODY_HEAD = 64 * 1024  # bytes of a body ``answers.bodies`` are searched in
_EPOCH_S = 1_000_000_000  # larger reset values are unix timestamps, smaller ones are deltas
_EPOCH_MS = 1_000_000_000_000
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


@dataclass(frozen=True)
class Pause:
    seconds: float
    credential_wide: bool


def is_refusal(status: int, headers: Mapping[str, str]) -> bool:
    """Whether the upstream refused the call (so it did nothing): 429, or 503 with ``Retry-After``.

    Only a refusal may be sent again; any other answer, however exhausted its headers, is final.
    """
    if status == 429:
        return True
    return status == 503 and any(name.lower() == "retry-after" for name in headers)


def reads_body(answers: Answers, status: int) -> bool:
    """Whether an answer of ``status`` may pause by its body (rule 3): only then is it read first."""
    return any(signal.status == status for signal in answers.bodies)


def pause_for(
    answers: Answers, status: int, headers: Mapping[str, str], now: float, body: bytes | None = None
) -> Pause | None:
    """The pause this answer asks for (``now`` is unix time), or None to carry on.

    ``body``: the answer's first bytes, given when ``reads_body`` said so."""
    throttled = status in answers.throttle_statuses or status == 503
    if not throttled and body is None:
        # Most answers report no limit: nothing to parse (every proxied call asks). A plain loop: a
        # generator under ``any`` was a call per header.
        names = _limit_headers(answers)
        for name in headers:
            if name.lower() in names:
                break
        else:
            return None
    lowered = {name.lower(): value for name, value in headers.items()}
    if throttled:
        seconds = retry_after(lowered.get(answers.retry_after.lower()), now, unit=answers.retry_after_unit)
        if seconds is not None:
            return _bounded(seconds, credential_wide=False)
    exhausted = [(s, p) for s in answers.headers if (p := signal_pause(s, lowered, now)) is not None]
    if exhausted:
        seconds = max(p for _, p in exhausted)
        return _bounded(seconds, credential_wide=any(s.credential_wide for s, _ in exhausted))
    if body is not None:
        text = body.decode("utf-8", "replace")
        for signal in answers.bodies:
            if signal.status == status and re.search(signal.pattern, text):
                return _bounded(signal.pause, credential_wide=True)
    if status in answers.throttle_statuses:
        return _bounded(answers.penalty, credential_wide=False)
    return None


_LIMIT_HEADERS: dict[int, tuple[Answers, frozenset[str]]] = {}


def _limit_headers(answers: Answers) -> frozenset[str]:
    """The lower-cased headers whose presence can make a non-throttle answer pause (rule 2): without
    them ``signal_pause`` returns None for every signal. Computed once per catalog entry's answers."""
    known = _LIMIT_HEADERS.get(id(answers))
    if known is not None and known[0] is answers:
        return known[1]
    names = frozenset(
        name.lower() for signal in answers.headers for name in (signal.remaining, signal.used_limit) if name is not None
    )
    if len(_LIMIT_HEADERS) >= 256:  # a reload brings new entries: bounded by forgetting
        _LIMIT_HEADERS.clear()
    _LIMIT_HEADERS[id(answers)] = (answers, names)
    return names


def retry_after(value: str | None, now: float, *, unit: str = "seconds") -> float | None:
    """``Retry-After`` as seconds from ``now``; None when absent or unreadable."""
    if not value:
        return None
    number = _number(value.strip())
    if number is not None:
        return number / 1000 if unit == "milliseconds" else number
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def signal_pause(signal: Signal, headers: Mapping[str, str], now: float) -> float | None:
    """The pause one reported limit asks for, or None while it is not exhausted."""
    if signal.remaining is not None:
        remaining = _number(headers.get(signal.remaining.lower()))
        if remaining is None or remaining > 0:
            return None
        return _until_reset(signal, headers, now)
    assert signal.used_limit is not None
    match = re.search(signal.used_pattern, headers.get(signal.used_limit.lower(), ""))
    if match is None or int(match.group(2)) <= 0:
        return None
    used = int(match.group(1)) / int(match.group(2))
    if used >= 1:
        return _until_reset(signal, headers, now)
    if signal.slowdown_from is not None and used >= signal.slowdown_from:
        return signal.slowdown_max * (used - signal.slowdown_from) / (1 - signal.slowdown_from)
    return None


def _until_reset(signal: Signal, headers: Mapping[str, str], now: float) -> float:
    if signal.reset is not None:
        reset = reset_seconds(headers.get(signal.reset.lower()), signal.reset_unit, now)
        if reset is not None:
            return reset
    if signal.window_header is not None:
        window = _number(headers.get(signal.window_header.lower()))
        if window is not None:
            return window / 1000 if signal.window_unit == "milliseconds" else window
    if signal.window is not None:
        return signal.window
    if signal.until == "utc_midnight":
        day = datetime.fromtimestamp(now, UTC).date() + timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() - now
    return 1.0


def reset_seconds(value: str | None, unit: str, now: float) -> float | None:
    """A reset header as seconds from ``now``, in the unit the catalog names; None when unreadable."""
    if not value:
        return None
    value = value.strip()
    if unit == "duration":
        return parse_duration(value)
    if unit == "iso8601":
        return _iso8601(value, now)
    number = _number(value)
    if number is None:
        return None
    if unit == "auto":
        unit = "epoch_ms" if number > _EPOCH_MS else "epoch_seconds" if number > _EPOCH_S else "seconds"
    if unit == "epoch_seconds" and number > _EPOCH_MS:
        unit = "epoch_ms"  # some APIs send milliseconds where their docs say seconds
    seconds = {"epoch_seconds": number - now, "epoch_ms": number / 1000 - now, "milliseconds": number / 1000}
    return seconds.get(unit, number)


def parse_duration(value: str) -> float | None:
    """``6m0s``, ``1h2m3.5s``, ``12ms``, ``20s`` (Go-style durations, as OpenAI sends them) in seconds."""
    pieces = _DURATION.findall(value)
    if not pieces or "".join(n + u for n, u in pieces) != value:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(number) * scale[unit] for number, unit in pieces)


def _iso8601(value: str, now: float) -> float | None:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now


def _bounded(seconds: float, *, credential_wide: bool) -> Pause | None:
    seconds = min(max(seconds, 0.0), MAX_PAUSE)
    return Pause(seconds, credential_wide) if seconds > 0 else None


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
