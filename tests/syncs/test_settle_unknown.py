"""Creates a crash left with an unknown outcome are settled by the sync's change capture.

The journal row is written as recovery leaves it after a replica died mid-create (state ``unknown``,
the Idempotency-Key claimed by the dead replica); the records the dead replica's write created are
made in the sandbox directly, as the upstream would have applied them. The running sync reads them
like any upstream change: the row is settled, the key answers, and each record is in the stream once.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from gateway.http import appkeys
from gateway.mutations.idempotency import IdempotencyKeys, request_hash
from gateway.mutations.journal import UNKNOWN
from gateway.store import tables as t
from tests.conftest import GatewayFactory
from tests.mutations.harness import SPECS
from tests.syncs.harness import SYNC, SyncEnv, connect, until

TOKEN = "writer"
DEAD_LEASE = "mutations:replica-dead"


def _records(provider: str, tag: str, n: int) -> list[dict[str, Any]]:
    spec = SPECS[provider]
    return [{**spec.sample, spec.email_field: f"{tag}-{i}@settle.example"} for i in range(n)]


async def _left_unknown(env: SyncEnv, key: str, body: dict[str, Any], *, opened_ago: float = 1.0) -> str:
    """The store as recovery leaves a create whose replica died: key claimed, journal row ``unknown``."""
    engine = env.gw.app[appkeys.ENGINE]
    assert await IdempotencyKeys(engine, lease=DEAD_LEASE).claim(f"{TOKEN}:{key}", request_hash(body)) is None
    mutation_id = "mut_" + uuid.uuid4().hex
    now = time.time()
    async with engine.begin() as conn:
        await conn.execute(
            insert(t.mutation_journal).values(
                id=mutation_id, sync_id=SYNC, collection_id=env.collection, kind="create",
                items=[[None, r["data"]] for r in body["records"]], seed=mutation_id, idempotency_key=f"{TOKEN}:{key}",
                lease=DEAD_LEASE, state=UNKNOWN, progress=0, applied=[], written=None,
                detail="the gateway stopped after sending creates", created_at=now - opened_ago, updated_at=now,
            )
        )  # fmt: skip
    return mutation_id


async def _journal_empty(env: SyncEnv) -> bool:
    async with env.gw.app[appkeys.ENGINE].connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(t.mutation_journal))).scalar_one()) == 0


async def _replay(env: SyncEnv, token: str, key: str, body: dict[str, Any]) -> tuple[int, Any, str | None]:
    headers = {**env.gw.auth(token), "Idempotency-Key": key}
    async with env.gw.client.post("/v1/mutations/run", json=body, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers.get("Idempotent-Replayed")


def _created(env: SyncEnv, data: dict[str, Any]) -> str:
    """The record created upstream directly (the dead replica's write, applied); its id."""
    made = env.change("create", data=data)
    return str(made["Id"] if env.provider == "salesforce" else made["id"])


@pytest.mark.parametrize("provider", ["hubspot", "salesforce"])
async def test_capture_settles_an_unknown_create_and_appends_each_record_once(
    make_gateway: GatewayFactory, aiohttp_server: Any, provider: str
) -> None:
    """Two records of one create: the first already read by the sync before recovery marked the row
    unknown (the usual order after a crash), the second read after. The row is settled, the key
    answers 200 with both, and each record has exactly one stream event (the capture's insert)."""
    env = await connect(make_gateway, aiohttp_server, provider, seed=3)
    token = await env.gw.token(TOKEN, ["mutations"])
    await until("the backfill", lambda: _live(env))
    first, second = _records(provider, "both", 2)
    body = {"kind": "create", "sync_id": SYNC, "collection_id": env.collection,
            "records": [{"data": first}, {"data": second}]}  # fmt: skip
    early = _created(env, first)
    await until("the sync read the first record", lambda: _stored(env, early))
    await _left_unknown(env, "k-both", body, opened_ago=5)
    late = _created(env, second)
    await until("change capture settled the journal row", lambda: _journal_empty(env))

    status, answer, replayed = await _replay(env, token, "k-both", body)
    assert status == 200 and replayed == "true", answer
    assert [r["upstream_id"] for r in answer["records"]] == [early, late]
    await env.wait_polls(1)  # one more complete poll appends nothing for them
    events = [(action, i) for action, i, _ in await env.events() if i in (early, late)]
    assert events == [("insert", early), ("insert", late)]


async def test_a_create_never_applied_is_settled_after_a_complete_round(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """Of two records only the first reached HubSpot before the crash: once a round that began after the
    row turned unknown has read every change, the row is settled with what was found, and the key answers
    500 mutation_interrupted listing that record (the other was never created, and is not sent again)."""
    env = await connect(make_gateway, aiohttp_server, "hubspot", seed=3)
    token = await env.gw.token(TOKEN, ["mutations"])
    await until("the backfill", lambda: _live(env))
    applied, never = _records("hubspot", "half", 2)
    body = {"kind": "create", "sync_id": SYNC, "collection_id": env.collection,
            "records": [{"data": applied}, {"data": never}]}  # fmt: skip
    mutation_id = await _left_unknown(env, "k-half", body)
    created = _created(env, applied)
    await until("change capture settled the journal row", lambda: _journal_empty(env))

    status, answer, _ = await _replay(env, token, "k-half", body)
    assert status == 500 and answer["code"] == "mutation_interrupted", answer
    assert answer["recovery"] == "resolved" and answer["mutation_id"] == mutation_id
    assert [r["upstream_id"] for r in answer["records"]] == [created]
    assert [i for action, i, _ in await env.events() if i == created] == [created]
    assert len(env.sandbox.table("contacts")) == 4  # the three seeded and the one applied: nothing re-sent


async def _live(env: SyncEnv) -> bool:
    return bool((await env.view())["state"] == "live")


async def _stored(env: SyncEnv, upstream_id: str) -> bool:
    return upstream_id in await env.stored()
