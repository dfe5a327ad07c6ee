"""x-gateway-priority at the edge: validated, capped at the token's class, echoed, never sent upstream."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.domain.models import TokenIn
from gateway.http import appkeys
from tests.conftest import GatewayFactory
from tests.mutations.harness import SPECS, connect
from tests.upstream.helpers import Upstream, add_credential, start_upstream


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    return await start_upstream(aiohttp_server)


@pytest.mark.parametrize("asked", ["urgent", "", " "])
async def test_an_unknown_priority_is_a_400_naming_the_header(
    make_gateway: GatewayFactory, upstream: Upstream, asked: str
) -> None:
    """Empty is not absent: an unset template variable must not pass as normal."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers={**gw.auth(), "x-gateway-priority": asked})
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == "invalid_request" and "x-gateway-priority" in body["error"]
    assert upstream.state.requests == 0


@pytest.mark.parametrize(("asked", "applied"), [(None, "normal"), ("low", "low"), ("LOW", "low"), ("high", "normal")])
async def test_the_applied_class_is_echoed_and_the_header_stays_here(
    make_gateway: GatewayFactory, upstream: Upstream, asked: str | None, applied: str
) -> None:
    """Absent means normal; above the token's class (normal by default) is served at the token's."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    extra = {} if asked is None else {"x-gateway-priority": asked, "x-gateway-anything": "1"}
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers={**gw.auth(), **extra})
    assert resp.status == 200
    assert resp.headers["x-gateway-priority"] == applied
    sent = {name.lower() for name in (await resp.json())["headers"]}
    assert not [name for name in sent if name.startswith("x-gateway-")]


async def test_a_normal_request_overtakes_queued_low_ones(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """On a 10/s bucket with 8 low calls queued, a normal call is sent next, not ninth."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo", rate_limit={"rate": 10, "per": 1, "burst": 1})
    sent: list[str] = []

    async def call(priority: str) -> None:
        headers = {**gw.auth(), "x-gateway-priority": priority}
        resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=headers)
        assert resp.status == 200 and resp.headers["x-gateway-priority"] == priority
        sent.append(priority)

    lows = [asyncio.ensure_future(call("low")) for _ in range(9)]
    while len(sent) < 1:  # the first low call took the only token; eight wait
        await asyncio.sleep(0.01)
    await call("normal")
    assert sent[:2] == ["low", "normal"]
    await asyncio.gather(*lows)


async def test_a_mutation_queues_every_upstream_call_it_makes_in_its_class(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """A low mutation of three records: every upstream call it made waited as low, none as normal."""
    env = await connect(await make_gateway(), aiohttp_server, "stripe")
    body = env.body("create", records=[{"data": SPECS["stripe"].sample} for _ in range(3)])
    headers = {**env.gw.auth(env.token), "x-gateway-priority": "low"}
    async with env.gw.client.post("/v1/mutations/run", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["x-gateway-priority"] == "low"
    metrics = env.gw.app[appkeys.METRICS]
    upstream_calls = sum(
        sample.value
        for metric in metrics.upstream_requests.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    waited = {
        sample.labels["priority"]: sample.value
        for metric in metrics.pacing_wait.collect()
        for sample in metric.samples
        if sample.name.endswith("_count")
    }
    assert upstream_calls >= 3 and waited == {"low": upstream_calls}


@pytest.mark.parametrize(
    ("token_priority", "asked", "applied"), [("high", "high", "high"), ("high", None, "normal"), ("low", "high", "low")]
)
async def test_the_tokens_priority_caps_the_class(
    make_gateway: GatewayFactory, upstream: Upstream, token_priority: str, asked: str | None, applied: str
) -> None:
    """A token may use up to its own class: asking for more is served at the token's, never refused."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    spec = TokenIn.model_validate({"name": "app", "scopes": ["proxy"], "priority": token_priority, "weight": 3})
    token = await gw.app[appkeys.TOKENS].create(spec)
    extra = {} if asked is None else {"x-gateway-priority": asked}
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers={**gw.auth(token), **extra})
    assert resp.status == 200
    assert resp.headers["x-gateway-priority"] == applied
