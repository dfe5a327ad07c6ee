"""x-gateway-cost through the proxy: the tokens a call takes, read by the gateway, never sent upstream."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.upstream.helpers import Upstream, add_credential, start_upstream


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    return await start_upstream(aiohttp_server)


async def test_a_costly_call_takes_its_tokens_and_the_header_stays_here(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """Two calls of cost 10 on a 10/s bucket: the second waits about a second; upstream never sees the header."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url, rate_limit={"rate": 10, "per": 1, "burst": 10})
    headers = {**gw.auth(), "x-gateway-cost": "10", "x-gateway-other": "x"}
    first = await gw.client.get("/v1/proxy/credential/cred-1/echo/a", headers=headers)
    assert first.status == 200
    echoed = (await first.json())["headers"]
    assert not [name for name in echoed if name.startswith("x-gateway-")]
    second = await gw.client.get("/v1/proxy/credential/cred-1/echo/b", headers=headers)
    assert second.status == 200
    assert float(second.headers["x-gateway-pacing-wait-ms"]) >= 800


@pytest.mark.parametrize("value", ["-1", "abc", "0", "1.5", "11"])
async def test_a_bad_cost_is_a_400_naming_the_header(
    make_gateway: GatewayFactory, upstream: Upstream, value: str
) -> None:
    """Not a whole number from 1 to the smallest burst (10): 400 invalid_request, nothing sent."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url, rate_limit={"rate": 10, "per": 1, "burst": 10})
    resp = await gw.client.get("/v1/proxy/credential/cred-1/echo/a", headers={**gw.auth(), "x-gateway-cost": value})
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == "invalid_request" and "x-gateway-cost" in body["error"]
    assert upstream.state.requests == 0
