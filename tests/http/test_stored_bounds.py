"""Values stored before a bound was tightened never break reading or proxying (migration 0010)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from gateway.app import create_app
from gateway.config import StoreConfig
from gateway.domain.models import CredentialIn, TokenIn
from gateway.http import appkeys
from gateway.store import tables as t
from gateway.store.db import create_engine
from gateway.store.objects import Objects
from gateway.vault.crypto import Keyring
from tests.conftest import Gateway, ServedLikeProduction, make_config
from tests.console.helpers import sign_in
from tests.store.test_tokens import _alembic
from tests.upstream.helpers import add_sync, start_upstream

# Accepted before the bounds on windows, rules and timeouts (a year at most, no bucket slower than a call a year).
OLD_LIMIT = {
    "rate": 5,
    "per": 1,
    "max_wait": 1e9,
    "windows": [{"rate": 10, "per": 1e308}, {"rate": 1e-300, "per": 1}],
    "rules": [{"match": {"path": "/**"}, "rate": 1e12, "per": 1e-300, "burst": 10**15, "cost": 1}],
}
OLD_TIMEOUTS = {"connect": 1e9, "total": 30}


async def test_out_of_bounds_limits_stored_earlier_still_list_and_proxy(
    unmigrated_store_url: str, keyring: Keyring, aiohttp_client: Any, aiohttp_server: Any
) -> None:
    """A credential holding numbers now out of bounds is listed and proxied (it made every listing a 500):
    0010 clamps them to the nearest value in bounds."""
    upstream = await start_upstream(aiohttp_server)
    engine = create_engine(StoreConfig(url=unmigrated_store_url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_alembic, "upgrade", "0009_typed_only_ids")
        auth = {"type": "bearer", "token": "t"}
        body = {"id": "old", "provider": "rest", "base_url": upstream.url + "/echo", "auth": auth}
        await Objects(engine, keyring).create_credential(CredentialIn.model_validate(body))
        async with engine.begin() as conn:
            values = {"rate_limit": OLD_LIMIT, "timeouts": OLD_TIMEOUTS}
            await conn.execute(update(t.credentials).where(t.credentials.c.id == "old").values(values))
    finally:
        await engine.dispose()
    app = create_app(make_config(unmigrated_store_url, keyring), keyring=keyring, ops_on_main=True)
    gw = Gateway(await aiohttp_client(ServedLikeProduction(app)), "")
    gw.admin_token = await app[appkeys.TOKENS].create(TokenIn(name="admin", scopes=["admin"]))
    resp = await gw.client.get("/v1/credentials", headers=gw.auth())
    assert resp.status == 200, await resp.text()
    (listed,) = (await resp.json())["data"]
    limit = listed["rate_limit"]
    assert limit["max_wait"] == 3600
    assert [(w["rate"], w["per"]) for w in limit["windows"]] == [(10, 31_622_400), (1 / 31_622_400, 1)]
    rule = limit["rules"][0]
    assert (rule["rate"], rule["per"], rule["burst"]) == (1e9, 0.001, 1_000_000_000)
    assert listed["timeouts"]["connect"] == 3600 and listed["timeouts"]["total"] == 30
    await sign_in(gw.client, gw.admin_token)  # its overview describes every credential's buckets
    await add_sync(gw, "old")
    resp = await gw.client.get("/v1/proxy/sync/sync-1/items", headers=gw.auth())
    assert resp.status == 200, await resp.text()
