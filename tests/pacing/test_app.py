"""Pacing inside the gateway app: readiness, the credential's bucket state, nonsense limits refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.http import appkeys
from tests.conftest import GatewayFactory

CREDENTIAL = {
    "id": "paced",
    "provider": "rest",
    "base_url": "https://api.example.com",
    "auth": {"type": "bearer", "token": "tok_supersecret"},
    "rate_limit": {"rate": 10, "burst": 2},
}


async def test_readyz_reports_an_unreachable_pacing_redis(make_gateway: GatewayFactory) -> None:
    """backend = redis with Redis down: /readyz is 503 with checks.pacing false, other checks true."""
    gw = await make_gateway(pacing={"backend": "redis", "redis_url": "redis://127.0.0.1:1/0"})
    resp = await gw.client.get("/readyz")
    assert resp.status == 503
    checks = (await resp.json())["checks"]
    assert checks["pacing"] is False and checks["store"] is True


async def test_credential_view_shows_its_bucket(make_gateway: GatewayFactory) -> None:
    """After a paced call, GET /v1/credentials/{id} shows tokens, queue depth and pause of its bucket."""
    gw = await make_gateway()
    assert (await gw.client.post("/v1/credentials", json=CREDENTIAL, headers=gw.auth())).status == 201
    credential = await gw.app[appkeys.OBJECTS].credential("paced")
    await gw.app[appkeys.PACER].acquire(credential, "/items")
    await gw.app[appkeys.PACER].observe(credential, "/items", 429, {"Retry-After": "5"})
    view = await (await gw.client.get("/v1/credentials/paced", headers=gw.auth())).json()
    pacing = view["pacing"]
    assert (pacing["rate"], pacing["burst"], pacing["queue_depth"], pacing["tokens"]) == (10, 2, 0, 0)
    assert pacing["paused_until"] is not None
    assert "tok_supersecret" not in str(pacing)


async def test_a_credential_never_used_shows_its_full_bucket(make_gateway: GatewayFactory) -> None:
    """Before any call, the view shows the effective limits and a full bucket, not nothing."""
    gw = await make_gateway()
    assert (await gw.client.post("/v1/credentials", json=CREDENTIAL, headers=gw.auth())).status == 201
    pacing = (await (await gw.client.get("/v1/credentials/paced", headers=gw.auth())).json())["pacing"]
    assert (pacing["rate"], pacing["burst"], pacing["queue_depth"], pacing["paused_until"]) == (10, 2, 0, None)
    assert pacing["tokens"] >= 1


SEARCH = {"path": "/search/**"}


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"rate_limit": {"per": 0}}, "rate_limit.per"),
        ({"rate_limit": {"max_concurrency": 0}}, "max_concurrency"),
        ({"rate_limit": {"rules": [{"match": SEARCH, "rate": 1, "per": 1, "speed": 3}]}}, "rate_limit.rules.0.speed"),
        ({"rate_limit": {"rules": [{"match": {"path": "/a/***"}, "cost": 2}]}}, "rate_limit.rules.0.match.path"),
        ({"rate_limit": {"rules": [{"match": SEARCH, "cost": 0}]}}, "rate_limit.rules.0.cost"),
        ({"rate_limit": {"rules": [{"match": SEARCH, "cost": 99}]}}, "rate_limit.rules.0.cost"),
        ({"rate_limit": {"windows": [{"rate": 0, "per": 60}]}}, "rate_limit.windows.0.rate"),
        ({"rate_limit": {"windows": [{"rate": -1, "per": 60}]}}, "rate_limit.windows.0.rate"),
    ],
)
async def test_patching_nonsense_limits_is_refused(
    make_gateway: GatewayFactory, patch: dict[str, Any], field: str
) -> None:
    """PATCH with per <= 0, max_concurrency < 1, a bad rule or window is a 400 naming the field."""
    gw = await make_gateway()
    await gw.client.post("/v1/credentials", json=CREDENTIAL, headers=gw.auth())
    resp = await gw.client.patch("/v1/credentials/paced", json=patch, headers=gw.auth())
    assert resp.status == 400
    assert field in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[providers.rest.rate_limit]\nrate = 0\n", "providers.rest.rate_limit.rate"),
        ("[providers.hubspot.shared_rate_limit]\nper = -1\n", "providers.hubspot.shared_rate_limit.per"),
        ("[providers.stripe.rate_limit]\nburst = 0\n", "providers.stripe.rate_limit.burst"),
        ("[providers.airtable.rate_limit]\nmax_wait = -0.5\n", "providers.airtable.rate_limit.max_wait"),
        (
            '[[credentials]]\nid = "c"\nprovider = "rest"\nbase_url = "https://x.example"\n'
            'auth = {type = "bearer", token = "t"}\nrate_limit = {rate = -3}\n',
            "credentials.0.rate_limit.rate",
        ),
        ("[providers.rest.rate_limit]\nwindows = [{ rate = 0, per = 60 }]\n", "rate_limit.windows.0.rate"),
        (
            '[providers.rest.rate_limit]\nrules = [{ match = { path = "/x", verb = "GET" }, cost = 1 }]\n',
            "providers.rest.rate_limit.rules.0.match.verb",
        ),
        ('[providers.rest.rate_limit]\nrules = [{ match = { path = "/***" }, cost = 1 }]\n', "rules.0.match.path"),
        ('[providers.rest.rate_limit]\nrules = [{ match = { path = "/x" }, cost = 0 }]\n', "rules.0.cost"),
    ],
)
def test_config_refuses_nonsense_limits_naming_the_key(tmp_path: Path, toml: str, key: str) -> None:
    """A limit of zero or less in the config file is a ConfigError naming the dotted key."""
    path = tmp_path / "gateway.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(path, environ={})
