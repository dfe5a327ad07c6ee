"""Windows, rules and cost (real time, local backend): every bound holds, rules do not hold back
plain calls, a cost takes that many tokens from every bucket, pauses hit the bucket they are about."""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any

import aiohttp
import pytest

from gateway.config import Config
from gateway.errors import InvalidRequest
from gateway.pacing.bucket import worst_excess
from gateway.pacing.registry import PathGlob, route
from tests.pacing.conftest import CountingUpstream, make_credential, paced_calls, warm_up

JITTER = 0.05  # measurement slack at the upstream only (see test_local.py)
# Times taken after acquire returns include the event loop's lateness, and a queue grants a slot up
# to bucket.CATCHUP in the past when its timer fires late: that much slack on measured grant times.
GRANT_JITTER = 0.02
SEARCH_RULE = {"match": {"path": "/search/**"}, "rate": 2, "per": 1, "burst": 1}


def test_the_glob_matcher() -> None:
    """``*`` is one segment (or part of one), ``**`` any number of segments, possibly none."""
    search = PathGlob("/crm/v3/objects/*/search")
    assert search.matches("/crm/v3/objects/contacts/search")
    assert search.matches("/crm/v3/objects/contacts/search/")
    assert not search.matches("/crm/v3/objects/a/b/search")
    assert PathGlob("/search/**").matches("/search") and PathGlob("/search/**").matches("/search/a/b")
    assert PathGlob("/api/chat.*").matches("/api/chat.postMessage")
    assert not PathGlob("/api/chat.*").matches("/api/users.list")
    assert PathGlob("/**").matches("/anything/at/all")
    assert PathGlob("/a/**/b/**/c").matches("/a/x/b/y/b/c") and not PathGlob("/a/**/b/**/c").matches("/a/c/b")


def _as_regex(glob: str) -> re.Pattern[str]:
    """The glob as a regex: the definition the matcher is checked against (it backtracks, so short paths only)."""
    parts = []
    for segment in glob.strip("/").split("/"):
        if segment == "**":
            parts.append("(?:/[^/]*)*")
        else:
            parts.append("/" + "[^/]*".join(re.escape(piece) for piece in segment.split("*")))
    return re.compile("".join(parts) + "/?")


def test_the_glob_matcher_agrees_with_the_regex_definition() -> None:
    """20,000 random globs (several ``**`` and ``*`` in a segment included) against random paths."""
    rng = random.Random(7)
    words = ["a", "b", "ab", "", "*", "a*", "*b", "a*b", "*a*", "a*b*a", "**"]
    for _ in range(20_000):
        glob = "/" + "/".join(rng.choice(words) for _ in range(rng.randint(1, 5))).replace("***", "**")
        path = "/" + "/".join(rng.choice(["a", "b", "ab", "ba", "aab", ""]) for _ in range(rng.randint(0, 6)))
        path += rng.choice(["", "/"])
        assert PathGlob(glob).matches(path) == (_as_regex(glob).fullmatch(path) is not None), (glob, path)


def test_many_double_stars_and_a_long_path_match_in_linear_time() -> None:
    """Fourteen ``**`` and a 4,000-segment path: the regex took minutes (a frozen event loop)."""
    glob = PathGlob("/" + "/".join(["**", "x"] * 14) + "/**/end")
    path = "/" + "/".join(["x"] * 4_000)
    started = time.process_time()
    assert not glob.matches(path)
    assert glob.matches(path + "/end")
    assert time.process_time() - started < 1.0


def test_a_rule_adds_its_buckets_and_cost_only_to_matching_calls() -> None:
    """Methods and path must both match; the route keeps the credential's buckets first."""
    rules = [{"match": {"methods": ["POST"], "path": "/v1/*/search"}, "rate": 2, "per": 1, "cost": 2}]
    credential = make_credential(rate=10, windows=[{"rate": 100, "per": 60}], rules=rules)
    plain = route(Config(), credential, "/v1/customers", "POST")
    assert [b.key for b in plain.buckets] == ["cred:cred1", "cred:cred1:w1"] and plain.cost == 1
    search = route(Config(), credential, "v1/customers/search?q=x", "POST")
    assert [b.key for b in search.buckets] == ["cred:cred1", "cred:cred1:w1", "cred:cred1:rule0"]
    assert search.cost == 2 and {b.cost for b in search.buckets} == {2}
    assert [b.key for b in search.target] == ["cred:cred1:rule0"]  # what an answer to it pauses
    assert route(Config(), credential, "/v1/customers/search", "GET").cost == 1


@pytest.mark.slow
async def test_two_windows_are_never_exceeded(
    make_pacer: Any, counting_upstream: CountingUpstream, session: aiohttp.ClientSession
) -> None:
    """10/s and 30 per 5 s on one credential: no window of either length sees more than its bound."""
    pacer = await make_pacer()
    await warm_up(session, counting_upstream.url, 5)
    credential = make_credential(rate=10, burst=5, windows=[{"rate": 30, "per": 5, "burst": 5}])
    granted = await paced_calls(pacer, credential, session, counting_upstream.url, 30)
    times = [t for _, t in granted]
    assert worst_excess(times, rate=10, per=1, burst=5, slack=GRANT_JITTER) <= 0
    assert worst_excess(times, rate=30, per=5, burst=5, slack=GRANT_JITTER) <= 0
    assert worst_excess(counting_upstream.arrivals, rate=30, per=5, burst=5, slack=counting_upstream.slack(JITTER)) <= 0
    assert [i for i, _ in granted] == list(range(30))


@pytest.mark.slow
async def test_a_rule_bucket_paces_its_calls_without_holding_back_plain_ones(make_pacer: Any) -> None:
    """Searches (2/s) never exceed their rule; plain calls at 10/s keep their pace beside them."""
    pacer = await make_pacer()
    credential = make_credential(rate=20, burst=2, rules=[SEARCH_RULE])
    searches: list[float] = []
    plain_waits: list[float] = []

    async def search() -> None:
        await pacer.acquire(credential, "/search/items")
        searches.append(time.monotonic())

    async def plain() -> None:
        for _ in range(25):
            permit = await pacer.acquire(credential, "/items", method="POST")
            plain_waits.append(permit.waited)
            await asyncio.sleep(0.1)  # the client's own pace: 10 calls per second

    await asyncio.gather(plain(), *(search() for _ in range(6)))
    assert worst_excess(searches, rate=2, per=1, burst=1, slack=GRANT_JITTER) <= 0
    assert len(searches) == 6 and max(searches) - min(searches) >= 2.4
    assert max(plain_waits) < 0.1, plain_waits


@pytest.mark.slow
async def test_a_search_429_pauses_the_rule_bucket_not_plain_calls(make_pacer: Any) -> None:
    """A Retry-After on a search pauses searches; a plain call right after goes at once."""
    pacer = await make_pacer()
    credential = make_credential(rate=20, burst=5, rules=[SEARCH_RULE])
    await pacer.acquire(credential, "/search/items")
    assert await pacer.observe(credential, "/search/items", 429, {"Retry-After": "2"}) == 2
    started = time.monotonic()
    plain = await pacer.acquire(credential, "/items")
    assert plain.waited < 2 / 2  # not held for the 2 s pause (a loaded loop may add a little)
    await pacer.acquire(credential, "/search/items")
    assert time.monotonic() - started >= 1.9


async def test_credential_wide_headers_pause_the_credential_too(make_pacer: Any) -> None:
    """An exhausted limit the catalog declares credential-wide pauses plain calls as well."""
    pacer = await make_pacer()
    credential = make_credential(rate=20, burst=5, rules=[SEARCH_RULE])
    spent = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"}
    assert await pacer.observe(credential, "/search/items", 200, spent) == 1
    with pytest.raises(Exception, match="max_wait"):
        await pacer.acquire(credential, "/items", max_wait=0.5)


@pytest.mark.slow
async def test_cost_5_on_a_10_per_second_bucket_gives_2_calls_per_second(make_pacer: Any) -> None:
    """Every call takes 5 tokens: the token stream keeps the bound and calls come 2 per second, FIFO."""
    pacer = await make_pacer()
    credential = make_credential(rate=10, burst=10)
    granted: list[tuple[int, float]] = []

    async def call(i: int) -> None:
        await pacer.acquire(credential, "/x", cost=5)
        granted.append((i, time.monotonic()))

    await asyncio.gather(*(call(i) for i in range(7)))
    times = [t for _, t in granted]
    assert worst_excess([t for t in times for _ in range(5)], rate=10, per=1, burst=10, slack=GRANT_JITTER) <= 0
    steady = (len(times) - 2) / (times[-1] - times[1])
    assert 1.8 <= steady <= 2.2, steady
    assert [i for i, _ in granted] == list(range(7))


async def test_mixed_costs_keep_arrival_order(make_pacer: Any) -> None:
    """Calls of cost 1 and 4 arriving together are granted in arrival order."""
    pacer = await make_pacer()
    credential = make_credential(rate=50, burst=4)
    order: list[int] = []

    async def call(i: int) -> None:
        await pacer.acquire(credential, "/x", cost=4 if i % 2 else 1)
        order.append(i)

    await asyncio.gather(*(call(i) for i in range(8)))
    assert order == list(range(8))


async def test_a_cost_above_the_smallest_burst_is_refused(make_pacer: Any) -> None:
    pacer = await make_pacer()
    credential = make_credential(rate=10, burst=10, rules=[SEARCH_RULE])
    with pytest.raises(InvalidRequest, match="x-gateway-cost"):
        await pacer.acquire(credential, "/search/x", cost=2)  # the rule's burst is 1
    with pytest.raises(InvalidRequest, match="x-gateway-cost"):
        await pacer.acquire(credential, "/x", cost=11)
    await pacer.acquire(credential, "/x", cost=10)


@pytest.mark.slow
async def test_windows_rules_and_cost_hold_on_redis(make_pacer: Any, redis_url: str, redis_prefix: str) -> None:
    """The same model in Redis: cost 5 on 10/s beside a 30 per 3 s window, and a 2/s rule."""
    pacer = await make_pacer(pacing={"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix})
    credential = make_credential(rate=10, burst=10, windows=[{"rate": 30, "per": 3, "burst": 10}], rules=[SEARCH_RULE])
    costly: list[float] = []
    searches: list[float] = []

    async def call(cost: int, path: str, into: list[float]) -> None:
        await pacer.acquire(credential, path, cost=cost)
        into.append(time.monotonic())

    await asyncio.gather(
        *(call(5, "/x", costly) for _ in range(5)), *(call(1, "/search/x", searches) for _ in range(3))
    )
    tokens = [t for t in costly for _ in range(5)] + searches
    assert worst_excess(tokens, rate=10, per=1, burst=10, slack=GRANT_JITTER) <= 0
    assert worst_excess(tokens, rate=30, per=3, burst=10, slack=GRANT_JITTER) <= 0
    assert worst_excess(searches, rate=2, per=1, burst=1, slack=GRANT_JITTER) <= 0


async def test_a_hubspot_search_429_does_not_stop_batch_writes(make_pacer: Any) -> None:
    """With the catalog's HubSpot entry: a 429 on a CRM search pauses searches only."""
    pacer = await make_pacer()
    credential = make_credential(provider="hubspot")
    search = "/crm/v3/objects/contacts/search"
    assert await pacer.observe(credential, search, 429, {"Retry-After": "5"}, method="POST") == 5
    write = await pacer.acquire(credential, "/crm/v3/objects/contacts/batch/create", method="POST", max_wait=2.5)
    assert write.waited < 2.5  # the search pause (5 s) would refuse it
    with pytest.raises(Exception, match="max_wait"):
        await pacer.acquire(credential, search, method="POST", max_wait=1)
