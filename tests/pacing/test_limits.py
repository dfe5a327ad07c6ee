"""limits.py and registry.py: effective limits and which buckets a call takes tokens from."""

from __future__ import annotations

from typing import Any

from gateway.config import Config
from gateway.domain.models import BearerAuth, Provider, RateLimitOverride
from gateway.domain.objects import Credential
from gateway.pacing.limits import PROVIDER_DEFAULTS, EffectiveLimit, credential_limit
from gateway.pacing.registry import airtable_base, route


def credential(provider: Provider = "rest", base_url: str = "https://api.example.com", **limit: Any) -> Credential:
    return Credential(
        id="cred1",
        provider=provider,
        base_url=base_url,
        auth=BearerAuth(type="bearer", token="t"),
        rate_limit=RateLimitOverride(**limit) if limit else None,
        timeouts=None,
        ca_bundle=None,
        version=1,
    )


def test_provider_defaults() -> None:
    """Each provider has its documented default, with burst equal to the rate."""
    assert PROVIDER_DEFAULTS["hubspot"] == EffectiveLimit(rate=100, per=10, burst=100)
    assert PROVIDER_DEFAULTS["airtable"].rate == 5
    assert all(limit.max_wait == 30 for limit in PROVIDER_DEFAULTS.values())


def test_credential_override_beats_config_override_beats_default() -> None:
    """Fields are merged one by one: credential > config.providers > provider default."""
    config = Config.model_validate({"providers": {"stripe": {"rate_limit": {"rate": 40, "max_wait": 5}}}})
    limit = credential_limit(config, "stripe", RateLimitOverride(rate=20, burst=3))
    assert limit == EffectiveLimit(rate=20, per=1, burst=3, max_wait=5)
    assert credential_limit(config, "stripe", None) == EffectiveLimit(rate=40, per=1, burst=40, max_wait=5)


def test_airtable_calls_use_one_bucket_per_base() -> None:
    """The base id is the first segment after /v0/, in the path or in the base URL."""
    assert airtable_base("https://api.airtable.com", "/v0/appABC123/Table") == "appABC123"
    assert airtable_base("https://api.airtable.com/v0", "appXYZ/Table%20one") == "appXYZ"
    assert airtable_base("https://api.airtable.com", "/v0/meta/bases") is None
    call = route(Config(), credential("airtable", "https://api.airtable.com"), "/v0/appABC123/t")
    assert call.home.key == "cred:cred1:base:appABC123"


def test_a_shared_provider_bucket_is_added_and_shares_the_hash_tag() -> None:
    """With shared_rate_limit the call takes a token from both buckets, keyed in one cluster slot."""
    config = Config.model_validate({"providers": {"rest": {"shared_rate_limit": {"rate": 50}}}})
    call = route(config, credential(), "/x")
    assert [b.key for b in call.buckets] == ["cred:cred1", "provider:rest"]
    assert {b.tag for b in call.buckets} == {"provider:rest"}
    assert call.buckets[1].limit.rate == 50
