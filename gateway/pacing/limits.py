"""Provider default limits and the effective limit of a credential.

Precedence, field by field: provider default < ``config.providers[<p>].rate_limit`` < the
credential's own ``rate_limit``. A field left out of an override keeps the value below it.

Defaults (documented in docs/pacing.md) are each provider's published per-credential limit, or a
conservative value where the published limit depends on the customer's plan:

- salesforce: 25 calls/s. Salesforce meters a rolling 24-hour allocation per org and caps concurrent
  long requests; 25/s spends a typical Enterprise allocation no faster than it refills while staying
  far below anything the API would throttle. ``Sforce-Limit-Info`` slows it down further (adaptive.py).
- hubspot: 100 calls per 10 s (the private-app burst limit of the lowest paid tiers).
- stripe: 100 calls/s (live-mode read/write limit).
- airtable: 5 calls/s per base (Airtable's limit is per base, not per token; see registry.py).
- rest: 10 calls/s, a polite default for an unknown API.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from gateway.config import Config
from gateway.domain.models import Provider, RateLimitOverride
from gateway.pacing.bucket import Limit

DEFAULT_MAX_WAIT = 30.0


@dataclass(frozen=True)
class EffectiveLimit:
    """The resolved limit of one bucket."""

    rate: float
    per: float
    burst: int
    max_wait: float = DEFAULT_MAX_WAIT
    max_concurrency: int | None = None

    @cached_property
    def schedule(self) -> Limit:
        """The bucket's scheduling parameters (computed once: it is on every call's path)."""
        return Limit.of(rate=self.rate, per=self.per, burst=self.burst)

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
        )


PROVIDER_DEFAULTS: dict[Provider, EffectiveLimit] = {
    "salesforce": EffectiveLimit(rate=25, per=1, burst=25),
    "hubspot": EffectiveLimit(rate=100, per=10, burst=100),
    "stripe": EffectiveLimit(rate=100, per=1, burst=100),
    "airtable": EffectiveLimit(rate=5, per=1, burst=5),
    "rest": EffectiveLimit(rate=10, per=1, burst=10),
}


def credential_limit(config: Config, provider: Provider, override: RateLimitOverride | None) -> EffectiveLimit:
    """The limit of a credential's own bucket (and of its per-base buckets for Airtable)."""
    limit = PROVIDER_DEFAULTS[provider]
    provider_config = config.providers.get(provider)
    if provider_config is not None:
        limit = limit.merged(provider_config.rate_limit)
    return limit.merged(override)


def shared_limit(config: Config, provider: Provider) -> EffectiveLimit | None:
    """The provider-wide bucket, if ``config.providers[<p>].shared_rate_limit`` asks for one."""
    provider_config = config.providers.get(provider)
    if provider_config is None or provider_config.shared_rate_limit is None:
        return None
    return PROVIDER_DEFAULTS[provider].merged(provider_config.shared_rate_limit)
