"""Only a refusal is ever sent again: an accepted call that reports exhaustion reaches the upstream once.

Every signal the pacer reads as "the window is spent" is tried on a POST the upstream answers with a
success: the upstream must see the POST exactly once, and the next call must wait for the pause.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.upstream.helpers import add_credential, oauth2_auth, start_upstream

# (provider, headers of the accepted answer, shortest pause the next call must wait, in seconds;
# None: the pause is longer than max_wait, so the next call is refused with 429 at once)
Signal = tuple[str, Callable[[], dict[str, str]], float | None]
SIGNALS: dict[str, Signal] = {
    "ratelimit_remaining_delta": (
        "rest",
        lambda: {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"},
        0.8,
    ),
    "ratelimit_remaining_epoch": (
        "rest",
        lambda: {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time()) + 2)},
        0.5,
    ),
    "hubspot_interval": (
        "hubspot",
        lambda: {"X-HubSpot-RateLimit-Remaining": "0", "X-HubSpot-RateLimit-Interval-Milliseconds": "1000"},
        0.8,
    ),
    "hubspot_secondly": ("hubspot", lambda: {"X-HubSpot-RateLimit-Secondly-Remaining": "0"}, 0.8),
    "hubspot_daily": ("hubspot", lambda: {"X-HubSpot-RateLimit-Daily-Remaining": "0"}, None),
    "salesforce_95_percent": ("salesforce", lambda: {"Sforce-Limit-Info": "api-usage=950/1000"}, 0.4),
    "salesforce_100_percent": ("salesforce", lambda: {"Sforce-Limit-Info": "api-usage=1000/1000"}, None),
}


@pytest.mark.parametrize("signal", sorted(SIGNALS))
async def test_an_accepted_write_reporting_exhaustion_is_sent_once(
    make_gateway: GatewayFactory, aiohttp_server: Any, signal: str
) -> None:
    """A 200 with an exhaustion header reaches the upstream once; the next call waits for the pause."""
    provider, headers, min_pause = SIGNALS[signal]
    upstream = await start_upstream(aiohttp_server)
    gw = await make_gateway()
    await add_credential(gw, upstream.url, provider=provider, rate_limit={"rate": 1000, "burst": 1000, "max_wait": 5})
    upstream.state.answer_headers = headers()

    sent = asyncio.get_running_loop().time()  # the pause starts after this, when the answer arrives
    first = await gw.client.post("/v1/proxy/credential/cred-1/answer/orders", json={"amount": 5}, headers=gw.auth())
    assert first.status == 200
    assert await first.json() == {"ok": True}
    assert upstream.state.paths == ["/answer/orders"], "an accepted POST was sent again"

    upstream.state.answer_headers = {}
    second = await gw.client.get("/v1/proxy/credential/cred-1/answer/next", headers=gw.auth())
    if min_pause is None:
        assert second.status == 429
        assert (await second.json())["code"] == "rate_limited"
        assert upstream.state.paths == ["/answer/orders"]
    else:
        assert second.status == 200
        # The pause runs from the first answer, so a loaded machine's gap before the second call counts
        # towards it: the second call waited, and did not reach the upstream before the pause was over.
        assert float(second.headers["x-gateway-pacing-wait-ms"]) > 0
        assert asyncio.get_running_loop().time() - sent >= min_pause
        assert upstream.state.paths == ["/answer/orders", "/answer/next"]


async def test_a_503_without_retry_after_is_returned_once(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """A 503 that reports exhaustion but carries no Retry-After is no refusal: returned as is, once."""
    upstream = await start_upstream(aiohttp_server)
    gw = await make_gateway()
    await add_credential(gw, upstream.url, rate_limit={"rate": 1000, "burst": 1000, "max_wait": 5})
    upstream.state.answer_status = 503
    upstream.state.answer_headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"}
    resp = await gw.client.post("/v1/proxy/credential/cred-1/answer/orders", json={}, headers=gw.auth())
    assert resp.status == 503
    assert upstream.state.paths == ["/answer/orders"]


@pytest.mark.parametrize(("status", "headers"), [(429, {"Retry-After": "1"}), (503, {"Retry-After": "1"})])
async def test_a_refusal_is_still_retried_after_the_pause(
    make_gateway: GatewayFactory, aiohttp_server: Any, status: int, headers: dict[str, str]
) -> None:
    """429, and 503 with Retry-After, did nothing upstream: the held body is sent again after the pause."""
    upstream = await start_upstream(aiohttp_server)
    gw = await make_gateway()
    await add_credential(gw, upstream.url, rate_limit={"rate": 1000, "burst": 1000, "max_wait": 5})
    upstream.state.answer_status, upstream.state.answer_headers = status, headers
    call = asyncio.ensure_future(
        gw.client.post("/v1/proxy/credential/cred-1/answer/orders", json={}, headers=gw.auth())
    )
    deadline = asyncio.get_running_loop().time() + 5
    while not upstream.state.paths:  # the refusal paused the bucket for 1 s: accept from now on
        assert asyncio.get_running_loop().time() < deadline, "the first attempt never arrived"
        await asyncio.sleep(0.01)
    upstream.state.answer_status, upstream.state.answer_headers = 200, {}
    resp = await call
    assert resp.status == 200
    assert upstream.state.paths == ["/answer/orders", "/answer/orders"]


async def test_an_oauth2_write_reporting_exhaustion_is_sent_once(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """The OAuth2 path resends only after a 401; an accepted answer with exhaustion headers is final."""
    upstream = await start_upstream(aiohttp_server)
    gw = await make_gateway()
    await add_credential(
        gw, upstream.url, oauth2_auth(upstream), rate_limit={"rate": 1000, "burst": 1000, "max_wait": 5}
    )
    upstream.state.answer_headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"}
    resp = await gw.client.post("/v1/proxy/credential/cred-1/answer/orders", json={}, headers=gw.auth())
    assert resp.status == 200
    assert upstream.state.paths == ["/answer/orders"]
    assert upstream.state.refreshes == 0
