"""The mutation journal and its recovery on real stores (SQLite and PostgreSQL) and real sandboxes.

The failure between the upstream write and the stream commit is a real one: a trigger on ``events``
makes the store refuse the insert (as a full disk or a lost connection would), so the run fails after
the upstream applied the chunk. Dropping the trigger lets recovery settle it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import Conflict
from gateway.http import appkeys
from gateway.mutations.idempotency import IdempotencyKeys
from gateway.mutations.journal import UNKNOWN
from gateway.sandbox.common import Knobs
from gateway.store import tables as t
from tests.conftest import GatewayFactory
from tests.mutations.harness import Env, connect
from tests.support import poll

FAST_RECOVERY = {"recovery_lease": 1.5}  # ticks every 0.5 s; a timed-out write is read back after 1.5 s


@asynccontextmanager
async def store_refuses_events(engine: AsyncEngine) -> AsyncIterator[None]:
    """Every insert into ``events`` fails inside the store until the block exits."""
    if engine.dialect.name == "postgresql":
        create = [
            "CREATE FUNCTION refuse_events() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$ "
            "LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_events BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_events()",
        ]
        drop = ["DROP TRIGGER refuse_events ON events", "DROP FUNCTION refuse_events()"]
    else:
        create = ["CREATE TRIGGER refuse_events BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'injected'); END"]
        drop = ["DROP TRIGGER refuse_events"]
    async with engine.begin() as conn:
        for statement in create:
            await conn.execute(text(statement))
    try:
        yield
    finally:
        async with engine.begin() as conn:
            for statement in drop:
                await conn.execute(text(statement))


async def _env(make_gateway: GatewayFactory, aiohttp_server: Any, provider: str) -> Env:
    gw = await make_gateway(mutations=FAST_RECOVERY)
    return await connect(gw, aiohttp_server, provider)


def _engine(env: Env) -> AsyncEngine:
    engine: AsyncEngine = env.gw.app[appkeys.ENGINE]
    return engine


async def _journal_rows(env: Env, state: str | None = None) -> int:
    j = t.mutation_journal.c
    query = select(func.count()).select_from(t.mutation_journal)
    if state is not None:
        query = query.where(j.state == state)
    async with _engine(env).connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def _stream_ids(env: Env, action: str) -> list[str]:
    return [upstream_id for a, upstream_id in await env.stream_actions() if a == action]


async def test_stripe_creates_cut_off_by_the_store_are_replayed_into_the_stream(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """The failed run answers 500 with the applied record; recovery replays all three under the same
    Stripe keys: three customers upstream (none twice), three inserts in the stream, and the key then
    answers 200 with every record."""
    env = await _env(make_gateway, aiohttp_server, "stripe")
    body = env.body("create", records=[{"data": {"name": f"c{i}", "email": f"c{i}@x.org"}} for i in range(3)])
    async with store_refuses_events(_engine(env)):
        status, answer, _ = await env.run(body, key="k-stripe")
        assert status == 500, answer
        assert answer["code"] == "internal_error" and answer["recovery"] == "pending"
        assert [r["data"]["name"] for r in answer["records"]] == ["c0"]
    await poll("recovery emptied the journal", _empty(env), deadline=30)
    customers = list(env.sandbox.table("customers").values())
    assert sorted(c["name"] for c in customers) == ["c0", "c1", "c2"]
    assert sorted(await _stream_ids(env, "insert")) == sorted(c["id"] for c in customers)
    status, answer, headers = await env.run(body, key="k-stripe")
    assert status == 200 and headers.get("Idempotent-Replayed") == "true"
    assert [r["data"]["name"] for r in answer["records"]] == ["c0", "c1", "c2"]
    assert len(env.sandbox.table("customers")) == 3


def _empty(env: Env) -> Any:
    async def check() -> bool:
        return await _journal_rows(env) == 0

    return check


async def test_updates_cut_off_after_the_answer_are_appended(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """HubSpot updates the upstream confirmed but the store refused reach the stream with their current
    state once recovery reads back the confirmed ids; the key then answers 200 listing them."""
    env = await _env(make_gateway, aiohttp_server, "hubspot")
    created = await env.create(env.spec.sample, {**env.spec.sample, "email": "b@x.org"})
    ids = [r["upstream_id"] for r in created]
    body = env.body("update", records=[{"upstream_id": i, "data": {"firstname": "Usul"}} for i in ids])
    async with store_refuses_events(_engine(env)):
        status, answer, _ = await env.run(body, key="k-upd")
        assert status == 500 and [r["upstream_id"] for r in answer["records"]] == ids
    await poll("recovery emptied the journal", _empty(env), deadline=30)
    assert await _stream_ids(env, "update") == ids
    status, answer, _ = await env.run(body, key="k-upd")
    assert status == 200, answer
    assert [r["data"]["firstname"] for r in answer["records"]] == ["Usul", "Usul"]
    assert len([w for w in env.writes() if w.path.endswith("/batch/update")]) == 1


async def test_creates_cut_off_after_the_answer_need_no_change_capture(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """A HubSpot create the upstream confirmed before the store failed is appended by recovery from the
    confirmed ids: one create upstream, one insert in the stream, the key answers 200."""
    env = await _env(make_gateway, aiohttp_server, "hubspot")
    body = env.body("create", records=[{"data": env.spec.sample}])
    async with store_refuses_events(_engine(env)):
        status, answer, _ = await env.run(body, key="k-create")
        assert status == 500 and len(answer["records"]) == 1
    await poll("recovery emptied the journal", _empty(env), deadline=30)
    (contact,) = env.sandbox.table("contacts")
    assert await _stream_ids(env, "insert") == [contact]
    status, answer, _ = await env.run(body, key="k-create")
    assert status == 200 and [r["upstream_id"] for r in answer["records"]] == [contact]


async def test_deletes_cut_off_are_read_back_and_appended(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """Salesforce deletes applied upstream reach the stream: the read-back finds the records gone."""
    env = await _env(make_gateway, aiohttp_server, "salesforce")
    created = await env.create(env.spec.sample)
    ids = [r["upstream_id"] for r in created]
    async with store_refuses_events(_engine(env)):
        status, _, _ = await env.run(env.body("delete", upstream_ids=ids))
        assert status == 500
    await poll("recovery emptied the journal", _empty(env), deadline=30)
    assert await _stream_ids(env, "delete") == ids


async def _slow_env(make_gateway: GatewayFactory, aiohttp_server: Any, provider: str) -> Env:
    """The next upstream call stalls 1 s and then applies; the gateway gives up after 0.3 s."""
    gw = await make_gateway(mutations=FAST_RECOVERY)
    knobs = Knobs(fault="timeout", fault_count=1, hang=1.0)
    return await connect(gw, aiohttp_server, provider, knobs=knobs, timeouts={"total": 0.3})


async def test_creates_without_upstream_idempotency_answer_409_outcome_unknown(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """A HubSpot create that timed out (HubSpot applies it late) is never sent again: the key answers
    409 mutation_outcome_unknown at once, naming the recovery state, and HubSpot saw one create."""
    env = await _slow_env(make_gateway, aiohttp_server, "hubspot")
    body = env.body("create", records=[{"data": env.spec.sample}])
    status, answer, _ = await env.run(body, key="k-create")
    assert status == 504 and answer["recovery"] == "pending"

    async def unknown() -> bool:
        return await _journal_rows(env, UNKNOWN) == 1

    await poll("recovery marked the create unknown", unknown, deadline=30)
    status, answer, _ = await env.run(body, key="k-create")
    assert status == 409, answer
    assert answer["code"] == "mutation_outcome_unknown" and answer["recovery"] == "awaiting_change_capture"
    assert "HubSpot" in answer["error"] and answer["mutation_id"].startswith("mut_")
    assert len([w for w in env.writes() if w.path.endswith("/batch/create")]) == 1


async def test_updates_that_timed_out_are_read_back(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """A HubSpot update whose outcome the gateway never saw is read back by id (after the grace a late
    write gets): its current state is appended, and the key answers 500 mutation_interrupted listing it."""
    env = await _slow_env(make_gateway, aiohttp_server, "hubspot")
    env.sandbox.set_knobs(fault=None)
    (created,) = await env.create(env.spec.sample)
    env.sandbox.set_knobs(fault="timeout", fault_count=1, hang=1.0)
    body = env.body("update", records=[{"upstream_id": created["upstream_id"], "data": {"firstname": "Usul"}}])
    status, _, _ = await env.run(body, key="k-slow-upd")
    assert status == 504
    await poll("recovery emptied the journal", _empty(env), deadline=30)
    assert await _stream_ids(env, "update") == [created["upstream_id"]]
    status, answer, _ = await env.run(body, key="k-slow-upd")
    assert status == 500 and answer["code"] == "mutation_interrupted" and answer["recovery"] == "recovered"
    upstream = env.sandbox.table("contacts")[created["upstream_id"]]["properties"]["firstname"]
    assert [r["data"]["firstname"] for r in answer["records"]] == [upstream]  # as HubSpot has it now


async def test_a_dead_claim_that_wrote_nothing_is_taken_over_at_once(make_gateway: GatewayFactory) -> None:
    """A claim whose replica's lease is gone and that left no journal row is dropped: the next
    request with the key runs instead of waiting for the 15-minute claim lease."""
    gw = await make_gateway()
    engine = gw.app[appkeys.ENGINE]
    dead = IdempotencyKeys(engine, lease="mutations:replica-gone")
    assert await dead.claim("tok:k", "h") is None
    alive = IdempotencyKeys(engine, lease=gw.app[appkeys.JOURNAL].lease, wait=0.5)
    assert await alive.claim("tok:k", "h") is None


async def test_a_live_claim_still_makes_duplicates_wait(make_gateway: GatewayFactory) -> None:
    """A claim of a replica that holds its lease is not taken over (it is still running)."""
    gw = await make_gateway()
    lease = gw.app[appkeys.JOURNAL].lease
    first = IdempotencyKeys(gw.app[appkeys.ENGINE], lease=lease)
    assert await first.claim("tok:k", "h") is None
    second = IdempotencyKeys(gw.app[appkeys.ENGINE], lease=lease, wait=0.3)
    with pytest.raises(Conflict, match="still in progress"):
        await second.claim("tok:k", "h")


async def test_a_write_that_timed_out_is_settled_by_recovery(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """Stripe applies a create after the gateway gave up waiting (504): recovery replays it under the
    same Stripe key, so the customer reaches the stream once and the key then answers 200."""
    gw = await make_gateway(mutations=FAST_RECOVERY)
    knobs = Knobs(fault="timeout", fault_count=1, hang=1.0)
    env = await connect(gw, aiohttp_server, "stripe", knobs=knobs, timeouts={"total": 0.3})
    body = env.body("create", records=[{"data": env.spec.sample}])
    status, answer, _ = await env.run(body, key="k-slow")
    assert status == 504 and answer["recovery"] == "pending" and answer["records"] == []
    await poll("recovery emptied the journal", _empty(env), deadline=30)

    async def applied_once() -> bool:
        return len(env.sandbox.table("customers")) == 1

    await poll("the late create landed upstream", applied_once, deadline=10)
    (customer,) = env.sandbox.table("customers")
    assert await _stream_ids(env, "insert") == [customer]
    status, answer, _ = await env.run(body, key="k-slow")
    assert status == 200 and [r["upstream_id"] for r in answer["records"]] == [customer]


@pytest.mark.parametrize("fault", ["cut_off", "garbled"])
async def test_a_write_whose_answer_cannot_be_read_is_settled_by_recovery(
    make_gateway: GatewayFactory, aiohttp_server: Any, fault: str
) -> None:
    """Stripe applies a create and its answer is cut off halfway or is not JSON: the outcome is unknown,
    as after a timeout (502 with "recovery": "pending"), and recovery replays it under the same Stripe
    key; it used to be closed as not written (the key answered that failure, the stream never saw it)."""
    env = await _env(make_gateway, aiohttp_server, "stripe")
    env.sandbox.set_knobs(fault=fault, fault_count=1)
    body = env.body("create", records=[{"data": env.spec.sample}])
    status, answer, _ = await env.run(body, key="k-spoiled")
    assert status == 502 and answer["code"] == "upstream_unavailable" and answer["recovery"] == "pending", answer
    await poll("recovery emptied the journal", _empty(env), deadline=30)
    (customer,) = env.sandbox.table("customers")
    assert await _stream_ids(env, "insert") == [customer]
    status, answer, _ = await env.run(body, key="k-spoiled")
    assert status == 200 and [r["upstream_id"] for r in answer["records"]] == [customer]
