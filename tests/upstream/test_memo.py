"""What a call derives from a credential (its prepared request, its pacing plan) is kept on the credential
object the cache hands out: replaced with that object when the credential changes, made again after a
reload, and gone with the objects the cache drops."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from gateway.http import appkeys
from gateway.upstream.cache import MAX_STALENESS
from gateway.upstream.client import Prepared
from tests.conftest import GatewayFactory, make_config
from tests.support import poll
from tests.upstream.helpers import Upstream, add_credential, start_upstream

SLACK = 5.0  # seconds on top of the documented bound: a loaded 2-core machine delays the checks' loop


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    return await start_upstream(aiohttp_server)


async def test_a_changed_credential_is_called_with_what_derives_from_its_new_version(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """A PATCHed token and limit: once the cache has the new version (within MAX_STALENESS), calls carry
    the new token and are paced by the new limit (one call an hour, no wait: the next is refused)."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url)

    async def call() -> tuple[int, list[str]]:
        async with gw.client.get("/v1/proxy/credential/cred-1/echo/x", headers=gw.auth()) as resp:
            body = await resp.json()
            return resp.status, body.get("headers", {}).get("authorization", [])

    assert await call() == (200, ["Bearer upstream-secret-token"])
    patch = {
        "auth": {"type": "bearer", "token": "the-new-token"},
        "rate_limit": {"rate": 1, "per": 3600, "burst": 1, "max_wait": 0},
    }
    assert (await gw.client.patch("/v1/credentials/cred-1", json=patch, headers=gw.auth())).status == 200

    async def new_token() -> bool:
        status, authorization = await call()
        assert status == 200, "the old limit (10,000/s) refused nothing, the new one grants this first call"
        return authorization == ["Bearer the-new-token"]

    await poll("calls carry the new token", new_token, deadline=MAX_STALENESS + SLACK)
    assert (await call())[0] == 429


async def test_a_reload_derives_again_from_the_same_credential_object(make_gateway: GatewayFactory) -> None:
    """A credential object held across a reload (a call in flight, a sync's poller) is prepared and
    paced by the reloaded provider settings, not by what was derived from it before."""
    providers = {"rest": {"rate_limit": {"rate": 5, "per": 1, "burst": 5}, "timeouts": {"read": 7}}}
    gw = await make_gateway(providers=providers)
    client, pacer = gw.app[appkeys.UPSTREAM], gw.app[appkeys.PACER]
    await add_credential(gw, "http://127.0.0.1:1", rate_limit=None)
    credential = await client.credentials.credential("cred-1")
    assert (client.timeouts(credential)["read"], pacer.limit(credential).rate) == (7, 5)
    changed = {"rest": {"rate_limit": {"rate": 9, "per": 1, "burst": 9}, "timeouts": {"read": 3}}}
    reloaded = make_config(gw.app[appkeys.CONFIG].store.url, providers=changed)
    client.reconfigure(reloaded)
    pacer.reconfigure(reloaded)
    assert (client.timeouts(credential)["read"], pacer.limit(credential).rate) == (3, 9)


async def test_what_is_derived_goes_with_the_credentials_the_cache_drops(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """200 credentials called once each through a cache of 20: the prepared requests alive afterwards are
    those of the 20 credentials cached, not one per credential ever called."""
    gw = await make_gateway(upstream={"credential_cache_size": 20})
    for n in range(200):
        await add_credential(gw, upstream.url, cid=f"cred-{n}")
        async with gw.client.get(f"/v1/proxy/credential/cred-{n}/echo/x", headers=gw.auth()) as resp:
            assert resp.status == 200
    gc.collect()
    assert len(gw.app[appkeys.UPSTREAM].credentials) == 20
    config = gw.app[appkeys.CONFIG]  # what this gateway prepared, not what an earlier test left for the GC
    assert sum(isinstance(thing, Prepared) and thing.config is config for thing in gc.get_objects()) <= 20
