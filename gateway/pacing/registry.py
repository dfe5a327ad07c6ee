"""Which buckets a call takes a token from, given its credential and upstream path.

- Every credential has its own bucket (``cred:<id>``), except Airtable, whose limit is per *base*:
  a call under ``/v0/<base>/...`` uses ``cred:<id>:base:<base>`` (the base id is the first path
  segment after ``/v0/``, whether ``/v0`` is in the credential's ``base_url`` or in the path).
- If ``config.providers[<p>].shared_rate_limit`` is set, every call of that provider also takes a
  token from ``provider:<p>``.

The *home* bucket is the most specific one: adaptive pauses and ``describe`` apply to it. ``tag`` is
the Redis Cluster hash tag: all keys of one reservation must live in one hash slot, so a credential
whose provider has a shared bucket uses the provider as its tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from gateway.config import Config
from gateway.domain.objects import Credential
from gateway.pacing.limits import EffectiveLimit, credential_limit, shared_limit

_BASE_ID = re.compile(r"[A-Za-z0-9]{1,64}")


@dataclass(frozen=True)
class BucketSpec:
    key: str
    limit: EffectiveLimit
    tag: str


@dataclass(frozen=True)
class Route:
    """The buckets of one call: ``home`` first, then any shared bucket; ``limit`` is the credential's."""

    buckets: tuple[BucketSpec, ...]
    limit: EffectiveLimit
    provider: str

    @property
    def home(self) -> BucketSpec:
        return self.buckets[0]


def route(config: Config, credential: Credential, path: str) -> Route:
    """The buckets that apply to ``credential`` calling ``path`` (relative to its ``base_url``)."""
    limit = credential_limit(config, credential.provider, credential.rate_limit)
    shared = shared_limit(config, credential.provider)
    tag = f"provider:{credential.provider}" if shared is not None else f"cred:{credential.id}"
    home_key = f"cred:{credential.id}"
    if credential.provider == "airtable":
        base = airtable_base(credential.base_url, path)
        if base is not None:
            home_key = f"{home_key}:base:{base}"
    buckets = [BucketSpec(key=home_key, limit=limit, tag=tag)]
    if shared is not None:
        buckets.append(BucketSpec(key=f"provider:{credential.provider}", limit=shared, tag=tag))
    return Route(buckets=tuple(buckets), limit=limit, provider=credential.provider)


def airtable_base(base_url: str, path: str) -> str | None:
    """The base id of an Airtable call, or None (e.g. ``/v0/meta/...`` calls share the credential bucket)."""
    segments = [s for s in (urlsplit(base_url).path.rstrip("/") + "/" + path.lstrip("/")).split("/") if s]
    try:
        base = segments[segments.index("v0") + 1]
    except (ValueError, IndexError):
        return None
    if base == "meta" or not _BASE_ID.fullmatch(base):
        return None
    return base
