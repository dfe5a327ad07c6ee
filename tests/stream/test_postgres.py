"""Postgres consumers: records materialized into the user's database, in order, idempotently."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import pytest

from gateway.domain.objects import Consumer
from gateway.egress import EgressPolicy
from gateway.stream.consumers.postgres import PostgresSink, table_name
from gateway.stream.consumers.webhook import DeliveryFailed
from gateway.stream.events import RecordChange
from tests.conftest import Gateway, GatewayFactory
from tests.stream.helpers import CONTACTS, add_consumer, append, insert, seed_sync
from tests.support import poll


async def _rows(dsn: str, table: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f'SELECT upstream_id, data::text AS data, deleted, seq FROM "{table}"')
    finally:
        await conn.close()
    return {r["upstream_id"]: (r["data"], r["deleted"], r["seq"]) for r in rows}


async def _pending(gw: Gateway, consumer_id: str) -> int:
    view = await (await gw.client.get(f"/v1/consumers/{consumer_id}", headers=gw.auth())).json()
    return int(view["pending"])


def test_table_names_are_sanitized_identifiers() -> None:
    """Collection ids become lower-case identifiers no longer than PostgreSQL allows."""
    assert table_name("gateway_", "salesforce:Contact") == "gateway_salesforce_contact"
    assert table_name("p_", 'airtable:tbl "x"; drop') == "p_airtable_tbl_x_drop"
    assert len(table_name("p_", "airtable:" + "x" * 100)) == 63


async def test_changes_are_materialized_with_deletes(make_gateway: GatewayFactory, pg_url: str) -> None:
    """Inserts, an update and a delete end up as one row per record with the latest state."""
    gw = await make_gateway()
    await seed_sync(gw.app)
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    await add_consumer(gw.app, id="mirror", kind="postgres", dsn=pg_url, table_prefix=prefix)
    await append(gw.app, [insert("003A", Name="Ada"), insert("003B", Name="Bob")])
    await append(gw.app, [RecordChange("003A", "update", {"Id": "003A", "Name": "Ada L."})])
    [last] = await append(gw.app, [RecordChange("003B", "delete", None)])
    deadline = time.monotonic() + 15
    while await _pending(gw, "mirror"):
        assert time.monotonic() < deadline, "the postgres consumer did not catch up"
        await asyncio.sleep(0.05)  # polling interval
    rows = await _rows(pg_url, table_name(prefix, CONTACTS))
    assert rows["003A"][:2] == ('{"Id": "003A", "Name": "Ada L."}', False)
    assert rows["003B"] == ('{"Id": "003B", "Name": "Bob"}', True, last.seq)


async def test_redelivered_older_events_change_nothing(make_gateway: GatewayFactory, pg_url: str) -> None:
    """Applying a batch again, or an older event after a newer one, leaves the newer state."""
    gw = await make_gateway()
    await seed_sync(gw.app)
    first = await append(gw.app, [insert("003A", Name="old")])
    second = await append(gw.app, [RecordChange("003A", "update", {"Id": "003A", "Name": "new"})])
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    sink = PostgresSink(EgressPolicy(()))
    mirror = Consumer("mirror", "postgres", None, None, {"dsn": pg_url, "table_prefix": prefix}, 0, "active")
    try:
        await sink.deliver(mirror, first + second)
        await sink.deliver(mirror, first)
    finally:
        await sink.close()
    rows = await _rows(pg_url, table_name(prefix, CONTACTS))
    assert rows["003A"] == ('{"Id": "003A", "Name": "new"}', False, second[0].seq)


async def test_a_dsn_the_egress_policy_denies_is_never_dialled(make_gateway: GatewayFactory) -> None:
    """asyncpg dialled any DSN, 169.254.169.254 (the cloud metadata service) included. Now the consumer
    is failing, naming the refusal, as a webhook to a denied address is."""
    gw = await make_gateway(upstream={"deny": ["169.254.0.0/16", "db.internal.example"]})
    await seed_sync(gw.app)
    dsns = {
        "metadata": "postgresql://u:p@169.254.169.254:5432/db",
        "by-name": "postgresql://u:p@db.internal.example/db",
    }
    for consumer_id, dsn in dsns.items():
        await add_consumer(gw.app, id=consumer_id, kind="postgres", dsn=dsn)
    await append(gw.app, [insert("003A", Name="Ada")])
    for consumer_id in dsns:

        async def refused(consumer_id: str = consumer_id) -> bool:
            view = await (await gw.client.get(f"/v1/consumers/{consumer_id}", headers=gw.auth())).json()
            return "refused" in (view["status_detail"] or "")

        await poll(f"{consumer_id} failing with the refusal", refused, deadline=15)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:pw-s3cret@a,b/db",  # several hosts
        "postgresql:///db?host=/var/run/postgresql&password=pw-s3cret",  # a socket directory
        "postgresql://u:pw-s3cret@localhost/db?hostaddr=169.254.169.254",  # dialled instead of localhost
        "postgresql://u:pw-s3cret@db:99999/db",
    ],
)
async def test_a_dsn_whose_host_the_policy_cannot_check_is_refused(make_gateway: GatewayFactory, dsn: str) -> None:
    """Refused when written (400 naming it), and when delivered to (stored by an earlier version)."""
    gw = await make_gateway()
    body = {"id": "mirror", "kind": "postgres", "dsn": dsn}
    resp = await gw.client.post("/v1/consumers", json=body, headers=gw.auth())
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["fields"] == ["postgres.dsn"] and "s3cret" not in await resp.text()
    mirror = Consumer("mirror", "postgres", None, None, {"dsn": dsn}, 0, "active")
    with pytest.raises(DeliveryFailed, match="refused"):
        await PostgresSink(EgressPolicy(())).deliver(mirror, [])
