"""Syncs keep the stream in step with the sandbox upstreams (real HTTP, real PostgreSQL)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import asyncpg
import pytest

from gateway.http import appkeys
from gateway.providers.capture import stripe as stripe_capture
from gateway.sandbox.common import Knobs
from gateway.syncs.poller import AHEAD
from tests.conftest import GatewayFactory
from tests.mutations.harness import SPECS
from tests.syncs.harness import PROVIDERS, SYNC, connect, until

BACKFILL = 5000


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_backfill_arrives_complete_and_in_order(
    make_gateway: GatewayFactory, aiohttp_server: Any, provider: str
) -> None:
    env = await connect(make_gateway, aiohttp_server, provider, seed=BACKFILL)
    await until("the backfill is complete", env.in_step, 120)
    await until("the sync is live", lambda: _state(env, "live"))
    view = await env.view()
    assert view["progress"] == {env.collection: BACKFILL}
    assert view["cursor"][env.collection]["phase"] == "live"
    events = await env.events()
    assert len({upstream_id for _, upstream_id, _ in events}) == BACKFILL
    times: dict[str, list[str]] = defaultdict(list)
    for _, upstream_id, record in events:
        times[upstream_id].append(record["upstream_updated_at"] or "")
    assert all(stamps == sorted(stamps) for stamps in times.values())


async def _state(env: Any, state: str) -> bool:
    return bool((await env.view())["state"] == state)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_changes_between_two_polls_reach_the_stream(
    make_gateway: GatewayFactory, aiohttp_server: Any, provider: str
) -> None:
    env = await connect(make_gateway, aiohttp_server, provider, seed=3)
    await until("the backfill is complete", env.in_step)
    keep, edit, drop = sorted(env.upstream())
    assert (await env.post("pause"))["state"] == "paused"
    created = env.seed(1, start=10)[0]
    env.change("update", edit, env.sample(20))
    env.change("delete", drop)
    brief = env.seed(1, start=30)[0]  # created, updated, deleted between two polls
    env.change("update", brief, env.sample(31))
    env.change("delete", brief)
    assert (await env.post("resume"))["state"] in ("backfilling", "live")
    await until("the changes arrived", env.in_step)
    stored = await env.stored()
    assert stored[edit] == "Name00020" and drop not in stored and brief not in stored and created in stored
    actions = [(a, i) for a, i, _ in await env.events()]
    assert ("update", edit) in actions and ("delete", drop) in actions and ("insert", created) in actions
    assert ("update", keep) not in actions
    if provider == "stripe":  # an event per change, even between two polls
        assert [a for a, i in actions if i == brief] == ["insert", "update", "delete"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_change_written_through_the_gateway_is_not_appended_twice(
    make_gateway: GatewayFactory, aiohttp_server: Any, provider: str
) -> None:
    env = await connect(make_gateway, aiohttp_server, provider, seed=1)
    await until("the backfill is complete", env.in_step)
    token = await env.gw.token("writer", ["mutations"])
    body = {"kind": "create", "sync_id": SYNC, "collection_id": env.collection,
            "records": [{"data": SPECS[provider].sample}]}  # fmt: skip
    async with env.gw.client.post("/v1/mutations/run", json=body, headers=env.gw.auth(token)) as resp:
        assert resp.status == 200, await resp.text()
        written = (await resp.json())["records"][0]["upstream_id"]
    await env.wait_polls(2)
    assert [a for a, i, _ in await env.events() if i == written] == ["insert"]


async def test_a_bad_page_makes_the_sync_fail_keep_its_cursor_and_recover(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    env = await connect(make_gateway, aiohttp_server, "stripe", seed=2)
    await until("the backfill is complete", env.in_step)
    cursor = (await env.view())["cursor"]
    env.sandbox.set_knobs(fault="malformed")
    await until("the sync is failing", lambda: _state(env, "failing"))
    view = await env.view()
    assert "cannot read" in view["last_error"] and view["cursor"] == cursor
    env.sandbox.set_knobs(fault="5xx", fault_count=1)
    env.seed(1, start=50)
    await until("the sync recovered", lambda: _state(env, "live"), 30)
    await until("the change arrived", env.in_step)
    polls = env.gw.app[appkeys.METRICS].registry.get_sample_value(
        "gateway_sync_polls_total", {"provider": "stripe", "outcome": "error"}
    )
    assert polls and polls >= 2


async def test_pause_stops_reading_and_backfill_reads_everything_again(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    env = await connect(make_gateway, aiohttp_server, "hubspot", seed=3)
    await until("the backfill is complete", env.in_step)
    runners = env.gw.app[appkeys.SYNC_RUNNERS]
    await env.post("pause")
    await until("the poller stopped", env.poller_stopped)
    before = len(env.sandbox.requests)
    env.seed(1, start=70)
    for _ in range(2):
        await runners.tick()  # the supervisor's round: a paused sync gets no poller
    assert len(env.sandbox.requests) == before and len(await env.stored()) == 3
    view = await env.post("backfill")
    assert view["state"] == "backfilling" and view["progress"] == {}
    await until("the backfill is complete", env.in_step)
    await until("progress counts every record", lambda: env.progress_is(4))
    inserts = [i for a, i, _ in await env.events() if a == "insert"]
    assert len(inserts) == len(set(inserts)) == 4  # unchanged records made no second event


async def test_bad_syncs_are_refused_naming_the_field(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    env = await connect(make_gateway, aiohttp_server, "airtable", create=False)
    gw = env.gw
    rest = {
        "id": "cred-rest",
        "provider": "rest",
        "base_url": "http://127.0.0.1:9",
        "auth": {"type": "bearer", "token": "x"},
    }
    async with gw.client.post("/v1/credentials", json=rest, headers=gw.auth()) as resp:
        assert resp.status == 201
    cases: list[tuple[dict[str, Any], str]] = [
        ({"credential_id": "cred-rest", "collections": ["rest:things"]}, "rest:things"),
        ({"credential_id": "cred-airtable", "collections": ["airtable:Contacts"]}, "base_id"),
        ({"credential_id": "cred-airtable", "collections": [], "options": {"poll_interval": 0.5}}, "poll_interval"),
        ({"credential_id": "cred-airtable", "collections": [], "options": {"max_share": 2}}, "max_share"),
        ({"credential_id": "cred-airtable", "collections": [], "options": {"max_share": "x"}}, "max_share"),
        ({"credential_id": "cred-airtable", "collections": [], "options": {"poll_interval": 1e308}}, "poll_interval"),
        ({"credential_id": "cred-airtable", "collections": [], "options": {"poll_intervall": 5}}, "poll_intervall"),
        ({"credential_id": "cred-airtable", "collections": [], "options": {"base_id": "../x"}}, "options.base_id"),
        (
            {"credential_id": "cred-airtable", "collections": [], "options": {"api_version": "59"}},
            "options.api_version",
        ),
    ]
    for body, named in cases:
        async with gw.client.post("/v1/syncs", json=body, headers=gw.auth()) as resp:
            error = await resp.json()
            assert resp.status == 400 and named in error["error"], (body, error)
    proxy_only = {"id": "proxy-only", "credential_id": "cred-rest"}
    async with gw.client.post("/v1/syncs", json=proxy_only, headers=gw.auth()) as resp:
        assert resp.status == 201
        assert (await resp.json())["state"] == "idle"
    async with gw.client.get("/v1/openapi.json", headers=gw.auth()) as resp:
        paths = (await resp.json())["paths"]
    assert {"/v1/syncs/{id}/pause", "/v1/syncs/{id}/resume", "/v1/syncs/{id}/backfill"} <= set(paths)


async def test_failing_upstream_does_not_lose_the_scan_deletes(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """Airtable: a delete is a record missing from a complete scan, even when a scan page failed first."""
    env = await connect(make_gateway, aiohttp_server, "airtable", seed=150, knobs=Knobs())
    await until("the backfill is complete", env.in_step)
    gone = sorted(env.upstream())[0]
    env.sandbox.set_knobs(fault="5xx", fault_count=1)
    env.change("delete", gone)
    await until("the delete arrived", env.in_step)
    assert ("delete", gone) in [(a, i) for a, i, _ in await env.events()]


async def test_a_salesforce_delete_during_the_backfill_is_not_lost(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """A record the backfill already read is deleted, then another is changed (so the backfill reads on
    past the delete's SystemModstamp): the backfill reads through queryAll, so the delete still arrives."""
    env = await connect(make_gateway, aiohttp_server, "salesforce", seed=1000, knobs=Knobs(latency=0.5))
    ids = list(env.upstream())  # in creation order: the backfill reads the first ones first
    await until("the backfill read its first page", lambda: _progress_over(env, 1))
    assert (await env.post("pause"))["state"] == "paused"
    await until("the poller stopped", lambda: _stopped(env))
    assert (await env.view())["cursor"][env.collection]["phase"] == "backfill"
    env.change("delete", ids[0])
    deleted_at = env.sandbox.deleted[ids[0]][1]["SystemModstamp"]  # type: ignore[attr-defined]

    async def changed_after_the_delete() -> bool:
        row = env.change("update", ids[1], env.sample(5000))
        return bool(row["SystemModstamp"] > deleted_at)  # not in the delete's millisecond

    await until("a change at a later instant", changed_after_the_delete)
    await env.post("resume")
    await until("the delete arrived", env.in_step, 120)
    assert ("delete", ids[0]) in [(a, i) for a, i, _ in await env.events()]


async def _progress_over(env: Any, n: int) -> bool:
    return bool(sum((await env.view())["progress"].values()) >= n)


async def _stopped(env: Any) -> bool:
    return SYNC not in env.gw.app[appkeys.SYNC_RUNNERS].running


async def test_a_stripe_anchor_older_than_30_days_makes_the_sync_list_again(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """No event for 30 days: Stripe no longer knows the anchor event and refuses it as ``ending_before``
    (resource_missing); the sync notes the newest event again and re-lists, and the change arrives."""
    env = await connect(make_gateway, aiohttp_server, "stripe", seed=3)
    await until("the backfill is complete", env.in_step)
    await until("the sync is live", lambda: _state(env, "live"))
    assert (await env.post("pause"))["state"] == "paused"
    await until("the poller stopped", lambda: _stopped(env))
    anchor = (await env.view())["cursor"][env.collection]["event"]
    assert anchor is not None
    for event in env.sandbox.events:  # type: ignore[attr-defined]
        event["created"] -= 31 * 86400  # every event so far is past Stripe's 30-day window
    edit = sorted(env.upstream())[0]
    env.change("update", edit, env.sample(20))
    await env.post("resume")
    await until("the change arrived", env.in_step)
    refused = [r for r in env.sandbox.requests_to("/v1/events") if ("ending_before", anchor) in r.query]
    assert refused, "the expired anchor was never asked for"
    view = await env.view()
    assert view["state"] != "failing" and view["cursor"][env.collection]["event"] != anchor


async def test_pages_are_read_ahead_of_a_held_commit(
    make_gateway: GatewayFactory, aiohttp_server: Any, store_url: str
) -> None:
    """While a page's commit waits on the store, the next AHEAD pages are read (bounded); once it is in,
    the pages that waited are committed together, in one transaction."""
    events_locked = await asyncpg.connect(store_url)
    held = events_locked.transaction()
    await held.start()
    await events_locked.execute("LOCK TABLE events IN EXCLUSIVE MODE")  # reads go on, the page's insert waits
    try:
        env = await connect(make_gateway, aiohttp_server, "stripe", seed=3000)

        async def read_ahead() -> bool:  # the anchor, the held commit's pages, AHEAD queued, one waiting for room
            return len(env.sandbox.requests) >= 3 + AHEAD

        await until("the sync read ahead of its commit", read_ahead)
        assert await env.stored() == {}
        assert len(env.sandbox.requests) <= 2 + 2 * AHEAD  # the held commit takes at most AHEAD pages
    finally:
        await held.rollback()
        await events_locked.close()
    await until("the backfill is complete", env.in_step)
    appended = Counter(record["inserted_at"] for _, _, record in await env.events())  # one time per transaction
    assert max(appended.values()) > stripe_capture.LIMIT  # more than one page's records


async def test_an_upstream_record_holding_a_nul_is_stored_with_a_replacement_character(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """PostgreSQL's jsonb refuses NUL: such a record failed every poll of its sync, so the records after
    it never arrived. It is stored (and streamed) with U+FFFD in its place, on both stores."""
    env = await connect(make_gateway, aiohttp_server, "stripe", seed=2)
    [odd] = [str(env.change("create", data={"name": "Nul\x00Name"})["id"])]
    env.seed(2, start=2)
    expected = {**env.upstream(), odd: "Nul\ufffdName"}

    async def arrived() -> bool:
        return await env.stored() == expected

    await until("every record, the odd one included", arrived, 60)
    assert [record["data"]["name"] for _, upstream_id, record in await env.events() if upstream_id == odd] == [
        "Nul\ufffdName"
    ]
    assert (await env.view())["last_error"] is None


async def test_a_stripe_backfill_whose_next_page_cursor_was_deleted_lists_again(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """The backfill pages customers with ``starting_after=<the last id read>``; that customer deleted
    meanwhile (while the sync was paused, or its replica killed), Stripe refuses the cursor
    (resource_missing). Failing for ever there lost one run of ``bench.chaos --scenario syncs`` a
    Stripe sync's last 100 records and its changes. The backfill goes on from the deleted customer's
    second (``created[lte]``), skipping the ids it read at that second (the seeded customers share a
    few seconds), so it reads every customer once: listing again from the newest read the pages
    before again (progress 100 more per page)."""
    seeded = 5 * stripe_capture.LIMIT + 50
    env = await connect(make_gateway, aiohttp_server, "stripe", seed=seeded)
    env.sandbox.set_knobs(latency=0.5)  # pages come slowly enough to pause the backfill between two

    async def a_page_in() -> bool:
        return bool(sum((await env.view())["progress"].values()) >= stripe_capture.LIMIT)

    await until("a first page is in", a_page_in)
    assert (await env.post("pause"))["state"] == "paused"
    await until("the poller stopped", lambda: _stopped(env))
    cursor = (await env.view())["cursor"][env.collection]
    assert cursor["phase"] == "backfill" and cursor["after"] is not None and cursor["after"] in cursor["ids"]
    env.change("delete", cursor["after"])
    env.sandbox.set_knobs(latency=0)
    await env.post("resume")
    await until("every record arrived", env.in_step)
    listed = env.sandbox.requests_to("/v1/customers")
    refused = [r for r in listed if ("starting_after", cursor["after"]) in r.query]
    assert refused, "the deleted cursor was never asked for"
    assert [("limit", str(stripe_capture.LIMIT)), ("created[lte]", str(cursor["at"]))] in [r.query for r in listed]
    view = await env.view()
    assert view["state"] != "failing" and view["progress"] == {env.collection: seeded}
