"""Salesforce sandbox fidelity for the Composite resource: subrequests, allOrNone rollback and limits."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.sandbox import salesforce
from gateway.sandbox.salesforce.composite import HALTED
from gateway.sandbox.salesforce.state import salesforce_id
from tests.sandbox.conftest import Running
from tests.sandbox.test_salesforce import COLLECTION, DATA, sf, state

__all__ = ["sf"]  # the shared fixture, imported so pytest finds it here

COMPOSITE = DATA + "/composite"


def creates(*sizes: int, bad: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """One collection POST subrequest per size; ``bad`` = (subrequest, record) gets an invalid email."""
    subrequests = []
    for n, size in enumerate(sizes):
        records: list[dict[str, Any]] = [
            {"attributes": {"type": "Contact"}, "LastName": f"C{n}-{i}"} for i in range(size)
        ]
        if bad is not None and bad[0] == n:
            records[bad[1]]["Email"] = "not-an-email"
        subrequests.append(
            {"method": "POST", "url": COLLECTION, "referenceId": f"chunk{n}", "body": {"records": records}}
        )
    return subrequests


async def post(sf: Running, body: dict[str, Any]) -> tuple[int, Any]:
    async with sf.request("POST", COMPOSITE, json=body) as resp:
        return resp.status, await resp.json()


async def test_three_collections_create_every_record_in_one_counted_call(sf: Running) -> None:
    """450 records in 3 collection subrequests are all created, answered per referenceId, counted as one call."""
    async with sf.request("POST", COMPOSITE, json={"allOrNone": True, "compositeRequest": creates(200, 200, 50)}) as r:
        assert r.status == 200 and r.headers["Sforce-Limit-Info"] == "api-usage=1/15000"
        answers = (await r.json())["compositeResponse"]
    assert [(a["referenceId"], a["httpStatusCode"], len(a["body"])) for a in answers] == [
        ("chunk0", 200, 200),
        ("chunk1", 200, 200),
        ("chunk2", 200, 50),
    ]
    assert all(a["httpHeaders"] == {} and all(s["success"] for s in a["body"]) for a in answers)
    assert len(state(sf).table("Contact")) == 450 and len(state(sf).requests) == 1


async def test_all_or_none_failure_restores_the_org_exactly(sf: Running) -> None:
    """A bad record in the third subrequest rolls back the first two; the store equals its snapshot."""
    kept = state(sf).insert("Contact", {"LastName": "Kept"})
    before = copy.deepcopy(state(sf).objects)
    status, answer = await post(sf, {"allOrNone": True, "compositeRequest": creates(200, 200, 50, bad=(2, 10))})
    first, second, third = answer["compositeResponse"]
    assert status == 200 and first["body"] == second["body"] == [HALTED]
    assert first["httpStatusCode"] == second["httpStatusCode"] == third["httpStatusCode"] == 400
    assert third["body"][10]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    assert third["body"][0] == {"success": False, "errors": [salesforce.ROLLED_BACK]}
    assert state(sf).objects == before and state(sf).table("Contact") == {kept["Id"]: kept}


async def test_all_or_none_rollback_restores_updates_and_deletes(sf: Running) -> None:
    """An update and a delete before a failing subrequest are undone, and the deleted id lives again."""
    a, b = (state(sf).insert("Contact", {"LastName": name}) for name in ("A", "B"))
    before = copy.deepcopy(state(sf).objects)
    update = {"records": [{"attributes": {"type": "Contact"}, "id": a["Id"], "LastName": "Changed"}]}
    subrequests = [
        {"method": "PATCH", "url": COLLECTION, "referenceId": "upd", "body": update},
        {"method": "DELETE", "url": f"{COLLECTION}?ids={b['Id']}", "referenceId": "del"},
        *creates(1, bad=(0, 0)),
    ]
    status, answer = await post(sf, {"allOrNone": True, "compositeRequest": subrequests})
    assert status == 200
    assert [a["httpStatusCode"] for a in answer["compositeResponse"]] == [400, 400, 400]
    assert state(sf).objects == before and b["Id"] not in state(sf).deleted


async def test_without_all_or_none_earlier_subrequests_stay_applied(sf: Running) -> None:
    """With allOrNone false, a failing subrequest leaves the others' records in place."""
    status, answer = await post(sf, {"allOrNone": False, "compositeRequest": creates(2, 1, bad=(1, 0))})
    assert status == 200
    first, second = answer["compositeResponse"]
    assert first["httpStatusCode"] == 200 and all(r["success"] for r in first["body"])
    assert second["body"][0]["success"] is False and len(state(sf).table("Contact")) == 2


async def test_get_subrequests_read_rows_and_delete_takes_ids_in_the_url(sf: Running) -> None:
    """GET composite/sobjects/{Type}?ids=&fields= and DELETE ?ids= work as subrequests."""
    a, b = (state(sf).insert("Contact", {"LastName": name}) for name in ("A", "B"))
    subrequests = [
        {"method": "GET", "url": f"{COLLECTION}/Contact?ids={a['Id']},{b['Id']}&fields=LastName", "referenceId": "r"},
        {"method": "DELETE", "url": f"{COLLECTION}?ids={a['Id']}", "referenceId": "d"},
        {"method": "GET", "url": f"{DATA}/sobjects/Contact/{b['Id']}?fields=LastName", "referenceId": "one"},
    ]
    status, answer = await post(sf, {"compositeRequest": subrequests})
    assert status == 200
    read, deleted, one = answer["compositeResponse"]
    assert [row["LastName"] for row in read["body"]] == ["A", "B"]
    assert deleted["body"] == [{"id": a["Id"], "success": True, "errors": []}] and one["body"]["LastName"] == "B"
    assert list(state(sf).table("Contact")) == [b["Id"]]


async def test_more_than_25_subrequests_are_refused_whole(sf: Running) -> None:
    """26 subrequests get a top-level 400 LIMIT_EXCEEDED and nothing runs."""
    subrequests = [
        {"method": "POST", "url": f"{DATA}/sobjects/Contact", "referenceId": f"c{i}", "body": {"LastName": "x"}}
        for i in range(26)
    ]
    status, answer = await post(sf, {"allOrNone": True, "compositeRequest": subrequests})
    assert status == 400 and answer[0]["errorCode"] == "LIMIT_EXCEEDED" and "25" in answer[0]["message"]
    assert state(sf).table("Contact") == {}


async def test_more_than_5_collection_subrequests_are_refused_whole(sf: Running) -> None:
    """Six sObject Collections subrequests exceed the limit of 5 and nothing runs."""
    status, answer = await post(sf, {"allOrNone": True, "compositeRequest": creates(1, 1, 1, 1, 1, 1)})
    assert status == 400 and answer[0]["errorCode"] == "LIMIT_EXCEEDED" and "5" in answer[0]["message"]
    assert state(sf).table("Contact") == {}


async def test_a_collection_subrequest_over_200_records_fails_and_rolls_back(sf: Running) -> None:
    """201 records in one subrequest is that subrequest's EXCEEDED_ID_LIMIT, rolling back the others."""
    status, answer = await post(sf, {"allOrNone": True, "compositeRequest": creates(5, 201)})
    assert status == 200
    first, second = answer["compositeResponse"]
    assert first["body"] == [HALTED] and second["httpStatusCode"] == 400
    assert second["body"][0]["errorCode"] == "EXCEEDED_ID_LIMIT" and state(sf).table("Contact") == {}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"compositeRequest": []}, "INVALID_API_INPUT"),
        ({"allOrNone": "yes", "compositeRequest": creates(1)}, "JSON_PARSER_ERROR"),
        ({"compositeRequest": [{"method": "POST", "url": "/elsewhere", "referenceId": "x"}]}, "INVALID_API_INPUT"),
        ({"compositeRequest": [*creates(1), *creates(1)]}, "INVALID_API_INPUT"),  # referenceId repeated
    ],
)
async def test_malformed_composite_bodies_are_refused_with_salesforce_errors(
    sf: Running, body: dict[str, Any], code: str
) -> None:
    """A body that is not a valid composite request is a top-level 400 in Salesforce's error shape."""
    status, answer = await post(sf, body)
    assert status == 400 and answer[0]["errorCode"] == code


async def test_unknown_subrequest_path_is_that_subrequests_404(sf: Running) -> None:
    """A subrequest to a resource the org does not have answers 404 NOT_FOUND inside the composite answer."""
    missing = salesforce_id("003", 1)
    subrequests = [{"method": "GET", "url": f"{DATA}/sobjects/Contact/{missing}", "referenceId": "gone"}]
    status, answer = await post(sf, {"compositeRequest": subrequests})
    [entry] = answer["compositeResponse"]
    assert status == 200 and entry["httpStatusCode"] == 404 and entry["body"][0]["errorCode"] == "NOT_FOUND"
