"""A Salesforce record a sync read (``FIELDS(ALL)``) goes back to Salesforce as it is.

Such a record holds compound fields the API computes (a contact's ``Name``, ``MailingAddress``), which
Salesforce refuses in writes ("Unable to create/update fields: Name"), as the sandbox does.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from gateway.http import appkeys
from gateway.store import tables as t
from tests.conftest import GatewayFactory
from tests.syncs.harness import SYNC, connect, until


async def test_a_contact_read_by_the_sync_is_updated_as_it_is(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """The stream's record of a contact, its LastName changed, is a valid update."""
    env = await connect(make_gateway, aiohttp_server, "salesforce", seed=1)
    await until("the backfill is complete", env.in_step)
    r = t.records.c
    async with env.gw.app[appkeys.ENGINE].connect() as conn:
        upstream_id, data = (await conn.execute(select(r.upstream_id, r.data).where(r.sync_id == SYNC))).one()
    assert {"Name", "MailingAddress", "SystemModstamp"} <= set(data)  # FIELDS(ALL), computed fields too
    body = {"kind": "update", "sync_id": SYNC, "collection_id": env.collection,
            "records": [{"upstream_id": upstream_id, "data": {**data, "LastName": "Usul"}}]}  # fmt: skip
    headers = env.gw.auth(await env.gw.token("writer", ["mutations"]))
    async with env.gw.client.post("/v1/mutations/run", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
    assert env.upstream()[upstream_id] == "Usul"
