"""limits.py and registry.py: effective limits and which buckets a call takes tokens from."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.config import Config
from gateway.domain.models import BearerAuth, RateLimitOverride
from gateway.domain.objects import Credential
from gateway.pacing import bucket
from gateway.pacing.limits import BucketLimit, EffectiveLimit, credential_limit, provider_default
from gateway.pacing.registry import airtable_base, route


def credential(provider: str = "rest", base_url: str = "https://api.example.com", **limit: Any) -> Credential:
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
    """Each provider has its catalog default (HubSpot: 100 per 10 s, a daily window, a search rule)."""
    config = Config()
    hubspot = provider_default(config, "hubspot")
    assert (hubspot.rate, hubspot.per, hubspot.burst) == (100, 10, 100)
    assert [(w.rate, w.per) for w in hubspot.windows] == [(250000, 86400)]
    assert provider_default(config, "airtable").rate == 5
    assert all(provider_default(config, name).max_wait == 30 for name in config.catalog)


def test_credential_override_beats_config_override_beats_default() -> None:
    """Fields are merged one by one: credential > config.providers > provider default."""
    config = Config.model_validate({"providers": {"stripe": {"rate_limit": {"rate": 40, "max_wait": 5}}}})
    limit = credential_limit(config, "stripe", RateLimitOverride(rate=20, burst=3))
    rules = provider_default(config, "stripe").rules
    assert limit == EffectiveLimit(rate=20, per=1, burst=3, max_wait=5, rules=rules)
    assert credential_limit(config, "stripe", None) == EffectiveLimit(rate=40, per=1, burst=40, max_wait=5, rules=rules)


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


@pytest.mark.parametrize(("rate", "burst", "late"), [(100, 10, 0.01), (10, 5, 0.1), (20, 10, 0.05), (1000, 20, 0.01)])
def test_calls_sent_as_late_as_the_lateness_allows_keep_the_bound(rate: float, burst: int, late: float) -> None:
    """A full bucket's burst and the slots after it, all held back until ``lateness`` after the first
    (a stall: none sent more than ``lateness`` late): every window stays within the bound, and 2 ms
    later it would not. A slow bucket allows a whole interval, never less than 10 ms."""
    limit = BucketLimit(rate, 1, burst)
    assert limit.lateness == pytest.approx(late, abs=1e-5)
    pairs = [(bucket.BucketState(), limit.schedule)]
    slots = [bucket.take(pairs, bucket.head_slot(pairs, 0, 0, 0))[0].slot / bucket.US for _ in range(300)]
    for extra, within in ((0.0, True), (0.002, False)):
        sent = [max(slot, slots[0] + limit.lateness + extra) for slot in slots]
        assert (bucket.worst_excess(sent, rate=rate, per=1, burst=burst) <= 1e-9) is within


def test_no_bucket_of_one_credential_is_a_bucket_of_another() -> None:
    """An id may hold ':': credential 'a:w1' (or 'a:rule0', 'a:base:app1', 'a:token') must not share a
    bucket with credential 'a''s first window (its rule, its base, its token), or each would pace the
    other's calls; before, every one of these pairs shared one."""
    limit = {"windows": [{"rate": 100, "per": 60}], "rules": [{"match": {"path": "/**"}, "rate": 2, "per": 1}]}

    def keys(cid: str, provider: str) -> set[str]:
        cred = dataclasses.replace(credential(provider, "https://api.airtable.com", **limit), id=cid)
        return {b.key for path in ("/v0/app1/t", "/v0/meta/bases", "/x") for b in route(Config(), cred, path).buckets}

    first = keys("a", "airtable")
    assert {"cred:a", "cred:a:w1", "cred:a:rule0", "cred:a:base:app1", "cred:a/token"} <= first
    for other in ("a:w1", "a:rule0", "a:rule0:w1", "a:base:app1", "a:token"):
        for provider in ("airtable", "rest"):
            assert not first & keys(other, provider), (other, provider)
