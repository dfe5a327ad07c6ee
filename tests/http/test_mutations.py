"""POST /v1/mutations/run against the real sandbox upstreams, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import TypeAdapter
from structlog.testing import capture_logs

from gateway.domain.models import ConsumerIn
from gateway.http import appkeys
from gateway.sandbox.common import Knobs
from gateway.stream import delivery
from tests.conftest import GatewayFactory
from tests.mutations.harness import SPECS, SYNC, connect

RECORD_KEYS = {
    "sync_id",
    "collection_id",
    "upstream_id",
    "upstream_updated_at",
    "data",
    "deleted",
    "inserted_at",
    "updated_at",
}
DUNCAN = {"FirstName": "Duncan", "LastName": "Idaho", "Email": "duncan@arrakis.org"}


async def test_reference_examples_work_against_salesforce(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """The docs' six example bodies (create/update/delete, one and many) answer with the documented shapes."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    paul = SPECS["salesforce"].sample
    [one] = await env.create(paul)
    many = await env.create(paul, DUNCAN)
    assert set(one) == RECORD_KEYS and one["deleted"] is False and one["data"]["Email"] == "paul@arrakis.org"
    assert [r["data"]["FirstName"] for r in many] == ["Paul", "Duncan"]
    ids = [one["upstream_id"], *(r["upstream_id"] for r in many)]
    status, answer, _ = await env.run(env.body("update", records=[{"upstream_id": ids[0], "data": paul}]))
    assert status == 200 and answer["records"][0]["upstream_id"] == ids[0]
    status, answer, _ = await env.run(
        env.body(
            "update",
            records=[{"upstream_id": ids[1], "data": {"FirstName": "Usul"}}, {"upstream_id": ids[2], "data": DUNCAN}],
        )
    )
    assert status == 200 and [r["data"]["FirstName"] for r in answer["records"]] == ["Usul", "Duncan"]
    assert answer["records"][0]["data"]["LastName"] == "Atreides"  # PATCH: untouched fields stay
    assert answer["records"][0]["upstream_updated_at"] is not None
    status, answer, _ = await env.run(env.body("delete", upstream_ids=[ids[0]]))
    assert status == 200 and answer["records"][0]["deleted"] is True
    status, answer, _ = await env.run(env.body("delete", upstream_ids=ids[1:]))
    assert status == 200 and [r["upstream_id"] for r in answer["records"]] == ids[1:]
    assert answer["records"][0]["data"]["FirstName"] == "Usul"  # last known data
    assert not env.sandbox.table("Contact") or all(i not in env.sandbox.table("Contact") for i in ids)


@pytest.mark.parametrize("provider", ["hubspot", "stripe", "airtable"])
async def test_create_update_delete_round_trip(
    make_gateway: GatewayFactory, aiohttp_server: Any, provider: str
) -> None:
    """Each provider creates, partially updates and deletes a record, and the stream logs all three."""
    env = await connect(await make_gateway(), aiohttp_server, provider)
    spec = SPECS[provider]
    [created] = await env.create(spec.sample)
    upstream_id = created["upstream_id"]
    assert created["data"][spec.email_field] == "paul@arrakis.org"
    status, answer, _ = await env.run(env.body("update", records=[{"upstream_id": upstream_id, "data": spec.change}]))
    assert status == 200, answer
    updated = answer["records"][0]["data"]
    assert {k: updated[k] for k in spec.change} == spec.change and updated[spec.email_field] == "paul@arrakis.org"
    status, answer, _ = await env.run(env.body("delete", upstream_id=[upstream_id]))
    assert status == 200 and answer["records"][0]["deleted"] is True
    assert await env.stream_actions() == [("insert", upstream_id), ("update", upstream_id), ("delete", upstream_id)]


async def test_a_single_upstream_id_string_deletes_one_record(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """``"upstream_id": "<id>"`` (a string, not a list) deletes that one record; a bad one names the field."""
    env = await connect(await make_gateway(), aiohttp_server, "stripe")
    [made] = await env.create(SPECS["stripe"].sample)
    status, answer, _ = await env.run(env.body("delete", upstream_id=made["upstream_id"]))
    assert status == 200 and [r["upstream_id"] for r in answer["records"]] == [made["upstream_id"]]
    assert answer["records"][0]["deleted"] is True
    status, answer, _ = await env.run(env.body("delete", upstream_id="no/slashes"))
    assert status == 400 and answer["fields"] == ["upstream_id.0"]  # named as sent


async def test_a_lone_surrogate_or_a_nul_is_a_400_before_any_upstream_call(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """``"\\ud800"`` cannot be UTF-8 (it broke the idempotency hash) and PostgreSQL's jsonb refuses a NUL
    (the stream insert failed after the upstream had created the record): both were 500s."""
    env = await connect(await make_gateway(), aiohttp_server, "stripe")
    for name, field, said in (("\ud800", "body", "surrogate"), ("Paul\u0000", "records.0.data.name", "NUL")):
        for key in (None, "k-" + said):
            status, answer, _ = await env.run(env.body("create", records=[{"data": {"name": name}}]), key=key)
            assert status == 400 and answer["fields"] == [field] and said in answer["error"], answer
    assert env.writes() == [] and await env.stream_actions() == []
    await env.create(env.spec.sample)  # and the next good call goes through


async def test_validation_error_uses_the_reference_sentence(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """An invalid email is a 400 upstream_validation_error quoting Salesforce, and nothing reaches the stream."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    bad = {"LastName": "Atreides", "Email": "not-an-email"}
    status, answer, _ = await env.run(env.body("create", records=[{"data": SPECS["salesforce"].sample}, {"data": bad}]))
    assert status == 400 and answer["code"] == "upstream_validation_error"
    assert answer["error"] == "Error: Salesforce validation error: `Email: invalid email address: not-an-email`"
    assert answer["records"] == [] and await env.stream_actions() == []


async def test_upstream_timeout_is_504(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """An upstream that does not answer in time gives 504 with the reference docs' sentence."""
    knobs = Knobs(fault="timeout", hang=5)
    env = await connect(await make_gateway(), aiohttp_server, "salesforce", knobs=knobs, timeouts={"total": 0.5})
    status, answer, _ = await env.run(env.body("create", records=[{"data": SPECS["salesforce"].sample}]))
    assert status == 504 and answer["error"] == "Error: Salesforce API timed out"


async def test_partial_failure_reports_and_streams_applied_records(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """Airtable stops at the failing chunk; the error carries the 10 applied records, which are in the stream."""
    env = await connect(await make_gateway(), aiohttp_server, "airtable")
    records = [{"data": {"Name": f"N{i}", "Email": "not-an-email" if i == 12 else f"n{i}@x.org"}} for i in range(15)]
    status, answer, _ = await env.run(env.body("create", records=records))
    assert status == 400 and answer["code"] == "upstream_validation_error"
    assert answer["error"].startswith("Error: Airtable validation error: `")
    assert [r["data"]["Name"] for r in answer["records"]] == [f"N{i}" for i in range(10)]
    assert [a for a, _ in await env.stream_actions()] == ["insert"] * 10
    assert len(env.writes()) == 2  # the third chunk was never sent


async def test_missing_upstream_record_is_404(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """Updating a record the upstream does not have is 404 not_found."""
    env = await connect(await make_gateway(), aiohttp_server, "stripe")
    status, answer, _ = await env.run(
        env.body("update", records=[{"upstream_id": "cus_missing", "data": {"name": "x"}}])
    )
    assert (
        status == 404 and answer["code"] == "not_found" and answer["error"].startswith("Error: Stripe record not found")
    )


async def test_idempotency_key_replays_without_touching_upstream(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """The same key and body return the stored answer and make no second upstream write."""
    env = await connect(await make_gateway(), aiohttp_server, "stripe")
    body = env.body("create", records=[{"data": SPECS["stripe"].sample}])
    first = await env.run(body, key="order-1")
    second = await env.run(body, key="order-1")
    assert first[0] == second[0] == 200 and first[1] == second[1]
    assert second[2].get("Idempotent-Replayed") == "true"
    assert len(env.writes()) == 1


async def test_idempotency_key_with_other_body_is_409(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """Reusing a key for a different body is a 409 conflict and writes nothing."""
    env = await connect(await make_gateway(), aiohttp_server, "stripe")
    await env.run(env.body("create", records=[{"data": SPECS["stripe"].sample}]), key="order-2")
    status, answer, _ = await env.run(env.body("create", records=[{"data": {"name": "Other"}}]), key="order-2")
    assert status == 409 and answer["code"] == "conflict"
    assert len(env.writes()) == 1


async def test_concurrent_duplicates_make_one_upstream_call(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """Three simultaneous requests with one key cause exactly one upstream write and the same answer."""
    env = await connect(await make_gateway(), aiohttp_server, "hubspot", knobs=Knobs(latency=0.3))
    body = env.body("create", records=[{"data": SPECS["hubspot"].sample}])
    answers = await asyncio.gather(*(env.run(body, key="same") for _ in range(3)))
    assert [a[0] for a in answers] == [200, 200, 200]
    assert answers[0][1] == answers[1][1] == answers[2][1]
    assert len(env.writes()) == 1


async def _ack_when_received(gw: Any, consumer_id: str) -> int:
    """A real pull consumer over HTTP: long-poll receive, then ack what arrived."""
    headers = gw.auth()
    async with gw.client.post(
        f"/v1/consumers/{consumer_id}/receive", json={"batch_size": 10, "wait_for": 10000}, headers=headers
    ) as resp:
        batch = (await resp.json())["data"]
    async with gw.client.post(
        f"/v1/consumers/{consumer_id}/ack", json={"ack_ids": [d["ack_id"] for d in batch]}, headers=headers
    ) as resp:
        assert resp.status == 200
    return len(batch)


async def _pull_consumer(gw: Any, consumer_id: str) -> None:
    body = TypeAdapter[Any](ConsumerIn).validate_python({"id": consumer_id, "kind": "pull"})
    await gw.app[appkeys.OBJECTS].create_consumer(body)


async def test_await_returns_after_the_consumer_acks(
    make_gateway: GatewayFactory, aiohttp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With await_consumer_ids the answer comes once a pull consumer acked the mutation's events.

    The fallback re-checks are longer than every wait here: only the wake-ups fired after the
    append's and the ack's commits (gateway/stream/signals.py) can let the receive and the await end.
    """
    monkeypatch.setattr(delivery, "RECHECK_SECONDS", 60.0)
    gw = await make_gateway()
    gw.app[appkeys.STREAM].awaiter.recheck = 60
    env = await connect(gw, aiohttp_server, "salesforce")
    await _pull_consumer(gw, "reader")
    acker = asyncio.create_task(_ack_when_received(gw, "reader"))
    body = env.body(
        "create",
        records=[{"data": SPECS["salesforce"].sample}],
        await_consumer_ids=["reader"],
        await_consumers_timeout=10000,
    )
    status, answer, _ = await env.run(body)
    assert status == 200 and len(answer["records"]) == 1
    assert await acker == 1


async def test_await_timeout_names_pending_consumers(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """A consumer that never acks makes a 500 consumer_timeout naming it, with the applied records."""
    gw = await make_gateway()
    env = await connect(gw, aiohttp_server, "salesforce")
    await _pull_consumer(gw, "idle")
    body = env.body(
        "create",
        records=[{"data": SPECS["salesforce"].sample}],
        await_consumer_ids=["idle"],
        await_consumers_timeout=300,
    )
    status, answer, _ = await env.run(body)
    assert status == 500 and answer["code"] == "consumer_timeout"
    assert answer["error"] == "Error: Timed out waiting for consumers: idle"
    assert len(answer["records"]) == 1


async def test_unknown_consumer_is_404_before_any_write(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """An unknown await consumer id is a 404 and nothing is sent upstream."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    body = env.body("create", records=[{"data": SPECS["salesforce"].sample}], await_consumer_ids=["ghost"])
    status, answer, _ = await env.run(body)
    assert status == 404 and "ghost" in answer["error"] and env.sandbox.requests == []


async def test_unknown_sync_and_foreign_collection_are_404(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """An unknown sync and a collection outside the sync are both 404 not_found."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    record = [{"data": {"LastName": "X"}}]
    unknown = await env.run({**env.body("create", records=record), "sync_id": "nope"})
    foreign = await env.run({**env.body("create", records=record), "collection_id": "salesforce:account"})
    assert (unknown[0], foreign[0]) == (404, 404)
    assert "collection_id" in foreign[1]["error"] or "salesforce:account" in foreign[1]["error"]


async def test_scope_and_only_restrictions(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """A token without the mutations scope, or limited to other syncs, is refused with 403."""
    gw = await make_gateway()
    env = await connect(gw, aiohttp_server, "salesforce")
    body = env.body("create", records=[{"data": {"LastName": "X"}}])
    proxy_only = await gw.token("proxy-only", ["proxy"])
    other_sync = await gw.token("other", ["mutations"], only=["sync:sync-other"])
    assert (await env.run(body, token=proxy_only))[0] == 403
    assert (await env.run(body, token=other_sync))[0] == 403
    assert env.sandbox.requests == []  # refused before anything went upstream
    assert (await env.run(body, token=await gw.token("mine", ["mutations"], only=[f"sync:{SYNC}"])))[0] == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "create", "records": [{"data": {}}], "collection_id": "salesforce:contact"}, "sync_id"),
        (
            {
                "kind": "create",
                "sync_id": SYNC,
                "collection_id": "salesforce:contact",
                "records": [{"upstream_id": "003", "data": {}}],
            },
            "records.0.upstream_id",
        ),
        (
            {"kind": "update", "sync_id": SYNC, "collection_id": "salesforce:contact", "records": [{"data": {}}]},
            "records.0.upstream_id",
        ),
        (
            {"kind": "delete", "sync_id": SYNC, "collection_id": "salesforce:contact", "upstream_ids": []},
            "upstream_ids",
        ),
        (
            {
                "kind": "create",
                "sync_id": SYNC,
                "collection_id": "salesforce:contact",
                "records": [{"data": {}}],
                "extra": 1,
            },
            "extra",
        ),
        (
            {
                "kind": "create",
                "sync_id": SYNC,
                "collection_id": "salesforce:contact",
                "records": [{"data": {}}] * 1001,
            },
            "records",
        ),
        ({"kind": "merge"}, "kind"),
        ([{"kind": "create"}], "body"),
    ],
)
async def test_bad_bodies_name_the_field(
    make_gateway: GatewayFactory, aiohttp_server: Any, body: dict[str, Any], field: str
) -> None:
    """Schema violations are 400 invalid_request naming the offending field, with no upstream call."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    status, answer, _ = await env.run(body)
    assert status == 400 and answer["code"] == "invalid_request" and field in answer["error"]
    assert env.sandbox.requests == []


async def test_the_request_line_names_the_upstream(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """A mutation's request line names the provider it wrote to and the time its calls waited in the pacer,
    as a proxied call's does."""
    env = await connect(await make_gateway(), aiohttp_server, "stripe")
    with capture_logs() as events:
        await env.create(SPECS["stripe"].sample)
    line = next(e for e in events if e["event"] == "request" and e["route"] == "mutations")
    assert (line["status"], line["upstream"]) == (200, "stripe")
    assert isinstance(line["pacing_wait_ms"], float)
