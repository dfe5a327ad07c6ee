"""Appending changes: records' last known state, changes, fan-out by filter, retention."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import Text, cast, func, select, update

from gateway.http import appkeys
from gateway.store import tables as t
from gateway.store.db import utcnow
from gateway.stream.events import RecordChange, last_known, purge_expired
from tests.conftest import GatewayFactory
from tests.stream.helpers import ACCOUNTS, CONTACTS, add_consumer, append, insert, seed_sync


async def test_update_event_carries_previous_values_of_changed_fields(make_gateway: GatewayFactory) -> None:
    """An update's ``changes`` holds the old value of every field that changed, and only those."""
    gw = await make_gateway()
    await seed_sync(gw.app)
    first = await append(gw.app, [insert("003A", Name="Ada", Email="ada@example.com")])
    second = await append(
        gw.app, [RecordChange("003A", "update", {"Id": "003A", "Name": "Ada L.", "Email": "ada@example.com"})]
    )
    assert second[0].seq > first[0].seq
    assert second[0].action == "update"
    assert second[0].changes == {"Name": "Ada"}
    assert second[0].record.inserted_at == first[0].record.inserted_at


async def test_delete_keeps_last_known_data_and_marks_deleted(make_gateway: GatewayFactory) -> None:
    """A delete without data reports the record's last known data with ``deleted`` set."""
    gw = await make_gateway()
    await seed_sync(gw.app)
    await append(gw.app, [insert("003B", Name="Grace")])
    [event] = await append(gw.app, [RecordChange("003B", "delete", None)])
    assert event.record.deleted and event.record.data == {"Id": "003B", "Name": "Grace"}
    async with gw.app[appkeys.ENGINE].connect() as conn:
        known = await last_known(conn, "sync-a", CONTACTS, ["003B", "nope"])
    assert list(known) == ["003B"] and known["003B"].deleted


async def test_fan_out_follows_each_consumers_sync_and_collection_filter(make_gateway: GatewayFactory) -> None:
    """Only consumers whose filter wants the event get a delivery row."""
    gw = await make_gateway()
    await seed_sync(gw.app)
    await seed_sync(gw.app, "sync-b")
    await add_consumer(gw.app, id="all", kind="pull")
    await add_consumer(gw.app, id="only-b", kind="pull", sync_id="sync-b")
    await add_consumer(gw.app, id="accounts", kind="pull", collections=[ACCOUNTS])
    await add_consumer(gw.app, id="contacts-a", kind="pull", sync_id="sync-a", collections=[CONTACTS])
    [event] = await append(gw.app, [insert("003C")])
    async with gw.app[appkeys.ENGINE].connect() as conn:
        rows = (await conn.execute(select(t.deliveries.c.consumer_id).where(t.deliveries.c.seq == event.seq))).all()
    assert sorted(r.consumer_id for r in rows) == ["all", "contacts-a"]


async def test_retention_purges_only_old_events_nobody_still_needs(make_gateway: GatewayFactory) -> None:
    """Old acknowledged events are purged; old pending ones and recent ones stay."""
    gw = await make_gateway()
    await seed_sync(gw.app)
    [old_done] = await append(gw.app, [insert("003D")])
    await add_consumer(gw.app, id="slow", kind="pull")
    [old_pending] = await append(gw.app, [insert("003E")])
    [recent] = await append(gw.app, [insert("003F")])
    engine = gw.app[appkeys.ENGINE]
    async with engine.begin() as conn:
        old = utcnow() - timedelta(days=8)
        await conn.execute(
            update(t.events).where(t.events.c.seq.in_([old_done.seq, old_pending.seq])).values(inserted_at=old)
        )
        assert await purge_expired(conn, retention=7 * 86400) == 1
        left = (await conn.execute(select(t.events.c.seq).order_by(t.events.c.seq))).scalars().all()
        assert list(left) == [old_pending.seq, recent.seq]
        assert (await conn.execute(select(func.count()).select_from(t.records))).scalar_one() == 3


async def test_a_record_changed_twice_in_one_append_keeps_both_events(make_gateway: GatewayFactory) -> None:
    """Two changes of one record in one call: two events in order, the second diffed against the first."""
    gw = await make_gateway()
    await seed_sync(gw.app)
    first, second = await append(
        gw.app, [insert("003G", Name="v1"), RecordChange("003G", "update", {"Id": "003G", "Name": "v2"})]
    )
    assert first.seq < second.seq and second.changes == {"Name": "v1"}
    async with gw.app[appkeys.ENGINE].connect() as conn:
        assert (await last_known(conn, "sync-a", CONTACTS, ["003G"]))["003G"].data["Name"] == "v2"


async def test_stored_rows_are_the_records_json_exactly(make_gateway: GatewayFactory) -> None:
    """``events.record`` is ``Record``'s JSON and ``records.data`` the data's, each encoded once per append.

    On SQLite the stored text is compared byte for byte with ``json.dumps`` of the model (what consumers,
    webhooks and the PostgreSQL table consumer read); PostgreSQL's JSONB keeps the value, not the text.
    """
    gw = await make_gateway()
    await seed_sync(gw.app)
    await append(gw.app, [insert("003H", Name="Zoë \u2028", Tags=["a", 1, 2.5, None, True], Nested={"x": {}})])
    events = await append(
        gw.app,
        [
            RecordChange("003H", "update", {"Id": "003H", "Name": 'Zoë "Z"'}, utcnow()),
            RecordChange("003H", "delete", None),
        ],
    )
    engine = gw.app[appkeys.ENGINE]
    exact = engine.dialect.name == "sqlite"
    e, r = t.events.c, t.records.c
    async with engine.connect() as conn:
        stored = dict((await conn.execute(select(e.id, cast(e.record, Text)).where(e.upstream_id == "003H"))).all())
        changes = dict((await conn.execute(select(e.id, cast(e.changes, Text)))).all())
        data = (await conn.execute(select(cast(r.data, Text)).where(r.upstream_id == "003H"))).scalar_one()
    for event in events:
        expected = event.record.model_dump(mode="json")
        assert (stored[event.id] == json.dumps(expected)) if exact else json.loads(stored[event.id]) == expected
        assert json.loads(changes[event.id]) == event.changes
    assert events[0].changes == {"Name": "Zoë \u2028", "Tags": ["a", 1, 2.5, None, True], "Nested": {"x": {}}}
    assert events[1].record.deleted and events[1].record.data == {"Id": "003H", "Name": 'Zoë "Z"'}
    last = events[1].record.data
    assert (data == json.dumps(last)) if exact else json.loads(data) == last
