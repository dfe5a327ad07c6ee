"""The effective limit of a credential: the catalog's default, overridden field by field.

Precedence: the provider's catalog entry (gateway/providers/catalog/<p>.toml) < the config's
``[providers.<p>.rate_limit]`` < the credential's own ``rate_limit``. A field left out of an override
keeps the value below it; ``windows`` and ``rules``, when given, replace the lists below them.

A limit is a bucket (``rate`` per ``per`` seconds, ``burst`` at once) plus ``windows`` (more limits on
the same calls, e.g. a daily one) and ``rules`` (per-endpoint buckets and costs, see registry.py).
Every window and rule bucket is paced like the main one; a call must fit all that apply.

``spread`` on a window hands its calls out evenly instead of letting a burst spend it: its burst
defaults to 1% of its rate (at least 1) and its rate is lowered by that burst, so no stretch of the
window's length ever sees more than ``rate`` calls and a steady demand is served at ``rate/per`` at
most, all day long, instead of emptying a daily budget in its first hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from gateway.config import Config
from gateway.domain.models import RateLimitOverride, Rule, Window
from gateway.errors import ConfigError, InvalidRequest
from gateway.pacing.bucket import JITTER, US, Limit

DEFAULT_MAX_WAIT = 30.0
MAX_INTERVAL = 31_622_400  # seconds: the slowest bucket allowed is one call a year
SPREAD_BURST = 0.01


@dataclass(frozen=True)
class BucketLimit:
    """One paced limit: ``rate`` calls per ``per`` seconds with ``burst`` at once."""

    rate: float
    per: float
    burst: int

    @cached_property
    def schedule(self) -> Limit:
        """The scheduling parameters (computed once: they are on every call's path)."""
        return Limit.of(rate=self.rate, per=self.per, burst=self.burst)

    @cached_property
    def lateness(self) -> float:
        """Seconds a call may be sent after its slot with the bound still kept: what the schedule's
        headroom absorbs (``Limit.of`` keeps 10 ms worth of tokens, whole tokens, so a slow bucket
        absorbs a whole interval), and never less than ``JITTER``, which every backend allows (a
        burst of 1 only has its 0.5% longer interval)."""
        exact = self.per / self.rate * US
        if self.burst >= 2:
            spare = self.burst * exact - self.schedule.tolerance - self.schedule.interval
        else:
            spare = self.schedule.interval - exact
        return max(JITTER, math.floor(spare) / US)

    @classmethod
    def of_window(cls, window: Window) -> BucketLimit:
        if not window.spread:
            return cls(window.rate, window.per, window.burst or max(1, int(window.rate)))
        burst = window.burst or max(1, math.ceil(window.rate * SPREAD_BURST))
        rate = window.rate - burst if window.rate > burst else window.rate
        return cls(rate, window.per, burst)


@dataclass(frozen=True)
class EffectiveLimit:
    """The resolved limit of a credential (or of a provider-wide bucket)."""

    rate: float
    per: float
    burst: int
    max_wait: float = DEFAULT_MAX_WAIT
    max_concurrency: int | None = None
    windows: tuple[Window, ...] = ()
    rules: tuple[Rule, ...] = ()

    @cached_property
    def schedule(self) -> Limit:
        return self.primary.schedule

    @cached_property
    def primary(self) -> BucketLimit:
        return BucketLimit(self.rate, self.per, self.burst)

    @cached_property
    def limits(self) -> tuple[BucketLimit, ...]:
        """The main bucket's limit, then one per window."""
        return (self.primary, *(BucketLimit.of_window(w) for w in self.windows))

    def merged(self, override: RateLimitOverride | None) -> EffectiveLimit:
        """This limit with the fields ``override`` sets; ``burst`` follows a new ``rate`` unless given."""
        if override is None:
            return self
        rate = override.rate if override.rate is not None else self.rate
        if override.burst is not None:
            burst = override.burst
        elif override.rate is not None:
            burst = max(1, int(override.rate))
        else:
            burst = self.burst
        return EffectiveLimit(
            rate=rate,
            per=override.per if override.per is not None else self.per,
            burst=burst,
            max_wait=override.max_wait if override.max_wait is not None else self.max_wait,
            max_concurrency=override.max_concurrency if override.max_concurrency is not None else self.max_concurrency,
            windows=override.windows if override.windows is not None else self.windows,
            rules=override.rules if override.rules is not None else self.rules,
        )

    def rule_limits(self, rule: Rule) -> tuple[BucketLimit, ...]:
        """The buckets a rule adds: its own rate (if any), then one per window."""
        own = () if rule.rate is None or rule.per is None else (rule_bucket(rule),)
        return (*own, *(BucketLimit.of_window(w) for w in rule.windows))

    def check(self) -> None:
        """Refuse a bucket slower than one call per ``MAX_INTERVAL`` (its interval would not be finite) and a
        rule whose cost no bucket of its calls could ever grant (``ValueError`` names the field)."""
        names = ["rate_limit", *(f"rate_limit.windows.{i}" for i in range(len(self.windows)))]
        buckets = list(zip(names, self.limits, strict=True))
        for index, rule in enumerate(self.rules):
            names = [] if rule.rate is None else [f"rate_limit.rules.{index}"]
            names += [f"rate_limit.rules.{index}.windows.{i}" for i in range(len(rule.windows))]
            buckets += zip(names, self.rule_limits(rule), strict=True)
        for name, limit in buckets:
            if limit.per / limit.rate > MAX_INTERVAL:
                raise ValueError(f"{name}.rate: {limit.rate:g} per {limit.per:g} s is under one call a year")
        smallest = min(limit.burst for limit in self.limits)
        for index, rule in enumerate(self.rules):
            bursts = [smallest, *(limit.burst for limit in self.rule_limits(rule))]
            if rule.cost is not None and rule.cost > min(bursts):
                raise ValueError(
                    f"rate_limit.rules.{index}.cost: {rule.cost} is above {min(bursts)}, "
                    "the smallest burst of the buckets its calls take"
                )


def rule_bucket(rule: Rule) -> BucketLimit:
    assert rule.rate is not None and rule.per is not None
    return BucketLimit(rule.rate, rule.per, rule.burst or max(1, int(rule.rate)))


def provider_default(config: Config, provider: str) -> EffectiveLimit:
    """The catalog entry's ``rate_limit`` (the ``rest`` entry's for a provider the catalog lacks)."""
    entry = config.catalog.get(provider) or config.catalog["rest"]
    spec = entry.definition.rate_limit
    assert spec.rate is not None and spec.per is not None  # the catalog model requires them
    base = EffectiveLimit(rate=spec.rate, per=spec.per, burst=spec.burst or max(1, int(spec.rate)))
    return base.merged(spec)


def credential_limit(config: Config, provider: str, override: RateLimitOverride | None) -> EffectiveLimit:
    """The limit of a credential's own bucket (and of its per-base buckets for Airtable)."""
    limit = provider_default(config, provider)
    provider_config = config.providers.get(provider)
    if provider_config is not None:
        limit = limit.merged(provider_config.rate_limit)
    return limit.merged(override)


def shared_limit(config: Config, provider: str) -> EffectiveLimit | None:
    """The provider-wide bucket, if ``config.providers[<p>].shared_rate_limit`` asks for one (no rules)."""
    provider_config = config.providers.get(provider)
    if provider_config is None or provider_config.shared_rate_limit is None:
        return None
    default = provider_default(config, provider)
    plain = EffectiveLimit(rate=default.rate, per=default.per, burst=default.burst, max_wait=default.max_wait)
    shared = plain.merged(provider_config.shared_rate_limit)
    return EffectiveLimit(rate=shared.rate, per=shared.per, burst=shared.burst, windows=shared.windows)


def check_config(config: Config) -> None:
    """Every rule cost of the catalog, the provider tables and the declared credentials can be granted.

    Run at start (``gateway serve`` and ``check-config``): a ``ConfigError`` (exit 2) names the place.
    """
    places: list[tuple[str, str, RateLimitOverride | None]] = [
        (f"provider {name} ({entry.origin})", name, None) for name, entry in config.catalog.items()
    ]
    places += [(f"providers.{name}", name, None) for name in config.providers.tables()]
    places += [(f"credentials.{n}", c.provider, c.rate_limit) for n, c in enumerate(config.credentials)]
    for place, provider, override in places:
        try:
            credential_limit(config, provider, override).check()
        except ValueError as exc:
            raise ConfigError(f"{place}: {exc}") from None


def check_credential(config: Config, provider: str, override: RateLimitOverride | None) -> None:
    """A credential (API, CLI) names a catalog provider and its limits can grant every rule's cost (400)."""
    if provider not in config.catalog:
        raise InvalidRequest(f"provider: {provider[:64]!r} is not in the provider catalog", field="provider")
    if override is None:
        return
    try:
        credential_limit(config, provider, override).check()
    except ValueError as exc:
        raise InvalidRequest(str(exc), field=str(exc).split(":", 1)[0]) from None
