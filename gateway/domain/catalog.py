"""The provider catalog's schema: what one entry may say (pure values; loading is gateway/catalog.py).

An entry names a provider's display name, base URL template, auth types, default ``rate_limit``
(windows and rules included), how to read its rate-limit answers (``Answers``: throttle statuses,
``Retry-After``, the headers that report each limit and the unit of their reset, the refusals only
the body names) and timeouts.
Every model forbids unknown keys, so a typo in a file is an error naming the key.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from gateway.domain.models import RateLimitOverride, Strict, TimeoutsOverride

AuthType = Literal["bearer", "basic", "header", "query", "oauth2"]
ResetUnit = Literal["auto", "epoch_seconds", "epoch_ms", "seconds", "milliseconds", "duration", "iso8601"]
DEFAULT_PENALTY = 1.0


class Signal(Strict):
    """One limit an upstream reports in its answers' headers, and how to read it.

    Exhausted when ``remaining`` reads 0, or when ``used_limit`` (``"32/40"``, or ``used_pattern``'s
    two groups) shows used >= limit. The pause then lasts until ``reset`` (read in ``reset_unit``),
    else the window (``window_header`` in ``window_unit``, else ``window`` seconds), else until the
    next UTC midnight (``until``). With ``slowdown_from`` the pause instead grows from 0 to
    ``slowdown_max`` seconds as used/limit goes from that fraction to 1 (spend a daily allocation
    slowly instead of stopping dead). ``credential_wide``: this limit is the credential's, so a call
    that took a rule's bucket pauses the credential's bucket too.
    """

    remaining: str | None = None
    limit: str | None = None
    used_limit: str | None = None
    used_pattern: str = r"(\d+)\s*/\s*(\d+)"
    reset: str | None = None
    reset_unit: ResetUnit = "auto"
    window: float | None = Field(default=None, gt=0)
    window_header: str | None = None
    window_unit: Literal["seconds", "milliseconds"] = "seconds"
    until: Literal["utc_midnight"] | None = None
    slowdown_from: float | None = Field(default=None, gt=0, lt=1)
    slowdown_max: float = Field(default=1.0, gt=0)
    credential_wide: bool = True

    @model_validator(mode="after")
    def _readable(self) -> Signal:
        if (self.remaining is None) == (self.used_limit is None):
            raise ValueError("a signal reads exactly one of remaining or used_limit")
        return self


class BodySignal(Strict):
    """A refusal only the body names, as Salesforce's 403 ``REQUEST_LIMIT_EXCEEDED`` (no header says the
    24-hour allocation is spent): an answer of ``status`` whose body (its first 64 KiB) holds
    ``pattern`` pauses the credential's bucket ``pause`` seconds, when neither ``Retry-After`` nor a
    header already said how long."""

    status: int = Field(ge=400, le=599)
    pattern: str = Field(min_length=1, description="a regular expression searched for in the body")
    pause: float = Field(gt=0, le=86_400)

    @model_validator(mode="after")
    def _compiles(self) -> BodySignal:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"pattern: {exc}") from None
        return self


class Answers(Strict):
    """How the upstream says "stop": its throttle statuses, ``Retry-After``, headers, bodies, and penalty."""

    throttle_statuses: list[int] = Field(default_factory=lambda: [429], min_length=1)
    retry_after: str = "Retry-After"
    retry_after_unit: Literal["seconds", "milliseconds"] = "seconds"
    headers: list[Signal] = Field(default_factory=list)
    bodies: list[BodySignal] = Field(default_factory=list, description="the first that matches counts")
    penalty: float = Field(default=DEFAULT_PENALTY, ge=0, description="pause after a bare throttle status")
    sends_retry_after: bool = Field(default=True, description="whether its throttle answers carry Retry-After")
    throttle_body: str = Field(default='{"error": "rate limited"}', description="the body of a throttle answer")

    @model_validator(mode="after")
    def _statuses(self) -> Answers:
        if any(not 400 <= s <= 599 for s in self.throttle_statuses):
            raise ValueError("throttle_statuses must be 4xx or 5xx codes")
        return self


class Definition(Strict):
    """One catalog entry, as written in its file (the name is the file's stem or the table's key)."""

    display_name: str = Field(min_length=1, max_length=80)
    base_url: str = Field(min_length=8, description="URL template; {placeholders} name account parts")
    auth: list[AuthType] = Field(min_length=1)
    sources: list[str] = Field(default_factory=list, description="public pages the figures come from")
    notes: str | None = None
    rate_limit: RateLimitOverride
    answers: Answers = Answers()
    timeouts: TimeoutsOverride | None = None

    @model_validator(mode="after")
    def _has_a_rate(self) -> Definition:
        if self.rate_limit.rate is None or self.rate_limit.per is None:
            raise ValueError("rate_limit needs rate and per (the provider's default)")
        return self


class ProviderView(Definition):
    """A catalog entry as the API shows it: the definition with its name and where it came from."""

    name: str
    origin: str = Field(description='"builtin", the file it was read from, or "config"')
