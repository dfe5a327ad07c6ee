"""Options an older version stored, that this one refuses, fail their own sync only (real PostgreSQL).

Before, a value that is not text made every ``GET /v1/syncs`` a 500, options that are not an object
stopped the runners' tick for every sync, and a ``null`` stopped the sync's poller with a TypeError.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from gateway.http import appkeys
from gateway.store import tables as t
from tests.conftest import GatewayFactory
from tests.syncs.harness import SYNC, connect, until

OLD = "sync-old"


@pytest.mark.parametrize(
    ("stored", "named"),
    [
        ({"max_share": "7", "poll_interval": 5}, "options.max_share"),
        ({"poll_interval": None}, "poll_interval"),
        ({"api_version": "59.0"}, "options.api_version"),  # checked on every read, not only when used
        ({"base_id": "appX/../v1"}, "options.base_id"),
        (["poll_interval"], "options"),
    ],
)
async def test_refused_stored_options_fail_their_sync_only(
    make_gateway: GatewayFactory, aiohttp_server: Any, stored: Any, named: str
) -> None:
    env = await connect(make_gateway, aiohttp_server, "stripe", seed=3)
    gw = env.gw
    body = {"id": OLD, "credential_id": "cred-stripe", "collections": [env.collection]}
    async with gw.client.post("/v1/syncs", json=body, headers=gw.auth()) as resp:
        assert resp.status == 201, await resp.text()
    async with gw.app[appkeys.ENGINE].begin() as conn:  # as an older version wrote them
        await conn.execute(update(t.syncs).where(t.syncs.c.id == OLD).values(options=stored))
    env.seed(2, start=3)
    await until("the other sync still reads", env.in_step)  # the runners' tick goes on

    async with gw.client.get("/v1/syncs", headers=gw.auth()) as resp:
        assert resp.status == 200, await resp.text()
        views = {view["id"]: view for view in (await resp.json())["data"]}
    assert views[SYNC]["state"] != "failing"
    old = views[OLD]
    assert old["state"] == "failing" and named in old["last_error"] and "PATCH" in old["last_error"]
    await gw.app[appkeys.SYNC_RUNNERS].tick()
    assert OLD not in gw.app[appkeys.SYNC_RUNNERS].running  # nobody reads it with options it refuses

    mutation = {"sync_id": OLD, "collection_id": env.collection, "kind": "create", "records": [{"data": {"name": "x"}}]}
    async with gw.client.post("/v1/mutations/run", json=mutation, headers=gw.auth()) as resp:
        error = await resp.json()
        assert resp.status == 409 and named in error["error"], error
    async with gw.client.patch(f"/v1/syncs/{OLD}", json={"collections": [env.collection]}, headers=gw.auth()) as resp:
        error = await resp.json()
        assert resp.status == 400 and "options" in error["error"], error

    async with gw.client.patch(f"/v1/syncs/{OLD}", json={"options": {"poll_interval": 1}}, headers=gw.auth()) as resp:
        assert resp.status == 200, await resp.text()
    gw.app[appkeys.SYNC_RUNNERS].poke(OLD)

    async def read_again() -> bool:
        async with gw.client.get(f"/v1/syncs/{OLD}", headers=gw.auth()) as resp:
            view = await resp.json()
        return bool(view["state"] == "live" and view["progress"] == {env.collection: 5})

    await until("the repaired sync reads everything", read_again)
