"""Salesforce mutations past 200 records: one all-or-none Composite call, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from gateway.sandbox.salesforce import SalesforceState
from tests.conftest import GatewayFactory
from tests.mutations.harness import Env, connect

DATA = "/services/data/v59.0"
COMPOSITE = DATA + "/composite"
COLLECTION = DATA + "/composite/sobjects"
SENTENCE = "Error: Salesforce validation error: `Email: invalid email address: not-an-email`"


def org(env: Env) -> SalesforceState:
    assert isinstance(env.sandbox, SalesforceState)
    return env.sandbox


def people(n: int, *, bad: int | None = None) -> list[dict[str, Any]]:
    """``n`` contacts; record ``bad`` (if given) has an invalid email."""
    records = [{"LastName": f"Fremen{i}", "Email": f"fremen{i}@arrakis.org"} for i in range(n)]
    if bad is not None:
        records[bad]["Email"] = "not-an-email"
    return records


def composites(env: Env) -> list[list[dict[str, Any]]]:
    """The subrequests of every Composite call the sandbox received, call by call."""
    return [r.json()["compositeRequest"] for r in env.sandbox.requests if r.path == COMPOSITE]


def seed(env: Env, n: int) -> list[str]:
    """``n`` contacts put straight into the org; their ids in order."""
    return [str(org(env).insert("Contact", {"LastName": f"Seed{i}"})["Id"]) for i in range(n)]


async def test_450_creates_are_one_composite_write_and_one_composite_read(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """450 creates are one all-or-none Composite call of 3 collections (200/200/50) and one batched read-back."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    created = await env.create(*people(450))
    assert [r["data"]["LastName"] for r in created] == [f"Fremen{i}" for i in range(450)]
    assert len(env.sandbox.requests) == 2
    write, read = (r.json() for r in env.sandbox.requests)
    assert write["allOrNone"] is True and read["allOrNone"] is False
    assert [(s["method"], s["url"], len(s["body"]["records"])) for s in write["compositeRequest"]] == [
        ("POST", COLLECTION, 200),
        ("POST", COLLECTION, 200),
        ("POST", COLLECTION, 50),
    ]
    assert [s["method"] for s in read["compositeRequest"]] == ["GET"] * 3
    assert created[449]["upstream_updated_at"] is not None and len(org(env).table("Contact")) == 450


async def test_a_bad_record_350_applies_nothing_anywhere(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """An invalid email in record 350 of 450 is a 400 naming it, with no record upstream, in the stream or answer."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    status, answer, _ = await env.run(env.body("create", records=[{"data": r} for r in people(450, bad=350)]))
    assert status == 400 and answer["code"] == "upstream_validation_error"
    assert answer["error"] == SENTENCE and answer["records"] == []
    assert org(env).table("Contact") == {} and await env.stream_actions() == []
    assert len(composites(env)) == 1 and len(env.sandbox.requests) == 1  # no read-back of a refused write


async def test_updates_past_200_are_all_or_none(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """A bad update in the third chunk leaves all 450 rows as they were and the stream empty."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    ids = seed(env, 450)
    records = [{"upstream_id": i, "data": {"FirstName": "Usul"}} for i in ids]
    records[420]["data"] = {"Email": "not-an-email"}
    status, answer, _ = await env.run(env.body("update", records=records))
    assert status == 400 and answer["error"] == SENTENCE and answer["records"] == []
    assert all("FirstName" not in row for row in org(env).table("Contact").values())
    assert [len(s["body"]["records"]) for s in composites(env)[0]] == [200, 200, 50]
    assert await env.stream_actions() == []


async def test_updates_past_200_apply_together(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """450 valid updates are one Composite PATCH call and every row and stream event shows the change."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    ids = seed(env, 450)
    status, answer, _ = await env.run(
        env.body("update", records=[{"upstream_id": i, "data": {"FirstName": "Usul"}} for i in ids])
    )
    assert status == 200 and [r["upstream_id"] for r in answer["records"]] == ids
    assert all(r["data"]["FirstName"] == "Usul" for r in answer["records"])
    assert [s["method"] for s in composites(env)[0]] == ["PATCH"] * 3
    assert await env.stream_actions() == [("update", i) for i in ids]


async def test_deletes_past_200_are_all_or_none(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """An unknown id among 450 deletes is a 404 and every one of the 449 real rows is still there."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    ids = seed(env, 450)
    ghost = ids[300]
    org(env).delete("Contact", ghost)
    status, answer, _ = await env.run(env.body("delete", upstream_ids=ids))
    assert status == 404 and answer["code"] == "not_found" and "entity is deleted" in answer["error"]
    assert len(org(env).table("Contact")) == 449 and await env.stream_actions() == []
    assert [s["method"] for s in composites(env)[0]] == ["DELETE"] * 3


async def test_deletes_past_200_go_in_one_call(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """450 deletes are one Composite call with ids in each subrequest's url, and all reach the stream."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    ids = seed(env, 450)
    status, answer, _ = await env.run(env.body("delete", upstream_ids=ids))
    assert status == 200 and all(r["deleted"] for r in answer["records"])
    [subrequests] = composites(env)
    assert subrequests[2]["url"] == f"{COLLECTION}?ids={','.join(ids[400:])}&allOrNone=true"
    assert org(env).table("Contact") == {} and len(env.sandbox.requests) == 1
    assert await env.stream_actions() == [("delete", i) for i in ids]


async def test_200_records_keep_the_plain_collection_call(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """Exactly 200 creates are one sObject Collections call and one plain retrieve, no Composite."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    await env.create(*people(200))
    assert [(r.method, r.path) for r in env.sandbox.requests] == [
        ("POST", COLLECTION),
        ("GET", COLLECTION + "/Contact"),
    ]
    assert env.sandbox.requests[0].json()["allOrNone"] is True


async def test_1000_records_fit_one_composite_call(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """The mutation maximum of 1,000 records is 5 collection subrequests, Salesforce's own limit."""
    env = await connect(await make_gateway(), aiohttp_server, "salesforce")
    created = await env.create(*people(1000))
    assert len(created) == 1000 and len(org(env).table("Contact")) == 1000
    assert [len(s["body"]["records"]) for s in composites(env)[0]] == [200] * 5
