"""Salesforce sandbox fidelity: ids, rows, sObject Collections, errors, limits and OAuth."""

from __future__ import annotations

import asyncio

import pytest

from gateway.sandbox import salesforce
from gateway.sandbox.salesforce.state import SALESFORCE, SalesforceState, id_18, salesforce_id
from tests.sandbox.conftest import Running, Start

AUTH = {"Authorization": f"Bearer {salesforce.DEFAULT_TOKEN}"}
DATA = "/services/data/v59.0"
COLLECTION = DATA + "/composite/sobjects"


def contact(**fields: object) -> dict[str, object]:
    return {"attributes": {"type": "Contact"}, **fields}


@pytest.fixture
async def sf(sandbox: Start) -> Running:
    return await sandbox(salesforce.create_app(), headers=AUTH)


def state(running: Running) -> SalesforceState:
    assert isinstance(running.state, SalesforceState)
    return running.state


def test_ids_have_the_key_prefix_and_a_valid_case_checksum() -> None:
    """Ids are 18 characters, start with the type's key prefix and end in the case checksum."""
    record_id = salesforce_id("003", 123456)
    assert len(record_id) == 18 and record_id.startswith("003")
    assert id_18(record_id[:15]) == record_id
    assert id_18("001A0000006Vm9r") == "001A0000006Vm9rIAC"  # the example from Salesforce's docs


async def test_create_then_get_a_contact_row(sf: Running) -> None:
    """POST sobjects/Contact answers 201 {id, success, errors}; GET returns the row with its timestamps."""
    async with sf.request("POST", DATA + "/sobjects/Contact", json={"LastName": "Hopper", "Email": "g@x.io"}) as resp:
        assert resp.status == 201
        created = await resp.json()
    assert created["success"] is True and created["errors"] == [] and created["id"].startswith("003")
    async with sf.request("GET", f"{DATA}/sobjects/Contact/{created['id']}") as resp:
        row = await resp.json()
    assert row["attributes"]["type"] == "Contact" and row["LastName"] == "Hopper" and row["FirstName"] is None
    assert row["CreatedDate"] == row["LastModifiedDate"] == row["SystemModstamp"]
    assert row["CreatedDate"].endswith("+0000")


async def test_single_row_validation_errors_use_salesforce_codes(sf: Running) -> None:
    """A missing LastName and a bad Email give 400 [{errorCode, message, fields}]."""
    async with sf.request("POST", DATA + "/sobjects/Contact", json={"Email": "nope"}) as resp:
        assert resp.status == 400
        [error] = await resp.json()
    assert error["errorCode"] == "REQUIRED_FIELD_MISSING" and error["fields"] == ["LastName"]
    async with sf.request("POST", DATA + "/sobjects/Contact", json={"LastName": "X", "Email": "nope"}) as resp:
        [error] = await resp.json()
    assert error["errorCode"] == "INVALID_EMAIL_ADDRESS" and error["fields"] == ["Email"]
    async with sf.request("POST", DATA + "/sobjects/Contact", json={"LastName": "X", "Shoe": 1}) as resp:
        assert resp.status == 400 and (await resp.json())[0]["errorCode"] == "INVALID_FIELD"


async def test_collection_create_all_or_none_rolls_back_every_record(sf: Running) -> None:
    """With allOrNone, one invalid record makes every result fail and nothing is written."""
    body = {"allOrNone": True, "records": [contact(LastName="A"), contact(LastName="B", Email="bad")]}
    async with sf.request("POST", COLLECTION, json=body) as resp:
        assert resp.status == 200
        results = await resp.json()
    assert results[0] == {"success": False, "errors": [salesforce.ROLLED_BACK]}
    assert results[1]["errors"][0]["statusCode"] == "INVALID_EMAIL_ADDRESS"
    assert state(sf).table("Contact") == {}


async def test_collection_create_without_all_or_none_keeps_the_valid_records(sf: Running) -> None:
    """Without allOrNone, valid records are created and the invalid one reports its errors."""
    body = {"records": [contact(LastName="A"), contact(Email="bad")]}
    async with sf.request("POST", COLLECTION, json=body) as resp:
        ok, failed = await resp.json()
    assert ok["success"] is True and ok["id"] in state(sf).table("Contact")
    assert failed["success"] is False and "id" not in failed
    assert {e["statusCode"] for e in failed["errors"]} == {"REQUIRED_FIELD_MISSING", "INVALID_EMAIL_ADDRESS"}


async def test_collection_update_then_retrieve_with_fields(sf: Running) -> None:
    """PATCH updates by id and moves LastModifiedDate; GET ?ids=&fields= returns rows in order, null if missing."""
    row = state(sf).insert("Contact", {"LastName": "Old"})
    row["LastModifiedDate"] = "2000-01-01T00:00:00.000+0000"
    async with sf.request("PATCH", COLLECTION, json={"records": [contact(id=row["Id"], LastName="New")]}) as resp:
        assert await resp.json() == [{"id": row["Id"], "success": True, "errors": []}]
    missing = salesforce_id("003", 1)
    url = f"{COLLECTION}/Contact?ids={row['Id']},{missing}&fields=LastName,LastModifiedDate"
    async with sf.request("GET", url) as resp:
        fetched, absent = await resp.json()
    assert fetched["LastName"] == "New" and fetched["LastModifiedDate"] > "2000" and absent is None
    assert set(fetched) == {"attributes", "Id", "LastName", "LastModifiedDate"}


async def test_collection_delete_all_or_none_keeps_everything_on_a_bad_id(sf: Running) -> None:
    """DELETE ?ids=&allOrNone=true with an unknown id deletes nothing and reports the valid one rolled back."""
    row = state(sf).insert("Contact", {"LastName": "Keep"})
    async with sf.request("DELETE", f"{COLLECTION}?ids={row['Id']},{salesforce_id('003', 1)}&allOrNone=true") as r:
        kept, unknown = await r.json()
    assert kept == {"id": row["Id"], "success": False, "errors": [salesforce.ROLLED_BACK]}
    assert unknown["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert row["Id"] in state(sf).table("Contact")


async def test_deleting_twice_reports_entity_is_deleted(sf: Running) -> None:
    """A second delete of the same id answers ENTITY_IS_DELETED."""
    row = state(sf).insert("Contact", {"LastName": "Gone"})
    async with sf.request("DELETE", f"{COLLECTION}?ids={row['Id']}") as resp:
        assert (await resp.json())[0]["success"] is True
    async with sf.request("DELETE", f"{COLLECTION}?ids={row['Id']}") as resp:
        assert (await resp.json())[0]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"


async def test_collections_refuse_more_than_200_records(sf: Running) -> None:
    """A collection of 201 records is refused whole with 400."""
    async with sf.request("POST", COLLECTION, json={"records": [contact(LastName="x")] * 201}) as resp:
        assert resp.status == 400 and (await resp.json())[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert state(sf).table("Contact") == {}


async def test_limit_info_header_and_request_limit_exceeded(sf: Running) -> None:
    """Every answer carries Sforce-Limit-Info; past the daily limit the answer is 403 REQUEST_LIMIT_EXCEEDED."""
    sf.state.set_knobs(daily_limit=2)
    async with sf.request("GET", DATA + "/sobjects/Contact") as resp:
        assert resp.headers["Sforce-Limit-Info"] == "api-usage=1/2"
    async with sf.request("GET", DATA + "/sobjects/Contact"):
        pass
    async with sf.request("GET", DATA + "/sobjects/Contact") as resp:
        assert resp.status == 403 and (await resp.json())[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
        assert resp.headers["Sforce-Limit-Info"] == "api-usage=2/2" and "Retry-After" not in resp.headers


async def test_bad_token_is_invalid_session_id(sf: Running) -> None:
    """A wrong bearer token gets 401 INVALID_SESSION_ID."""
    async with sf.http.get(sf.url + DATA + "/sobjects/Contact", headers={"Authorization": "Bearer x"}) as resp:
        assert resp.status == 401 and (await resp.json())[0]["errorCode"] == "INVALID_SESSION_ID"


async def test_injected_validation_error_fails_one_record(sf: Running) -> None:
    """The one-shot validation knob fails exactly the next record written."""
    sf.state.set_knobs(validation_errors=1)
    async with sf.request("POST", COLLECTION, json={"records": [contact(LastName="A"), contact(LastName="B")]}) as r:
        first, second = await r.json()
    assert first["errors"][0]["statusCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION" and second["success"] is True


async def test_oauth_refresh_issues_tokens_that_expire(sandbox: Start) -> None:
    """The token endpoint issues an access token that works until token_ttl, then gets INVALID_SESSION_ID."""
    app = salesforce.create_app()
    sf = await sandbox(app)
    sf.state.set_knobs(token_ttl=0.3)
    form = {
        "grant_type": "refresh_token",
        "client_id": salesforce.DEFAULT_CLIENT_ID,
        "client_secret": salesforce.DEFAULT_CLIENT_SECRET,
        "refresh_token": salesforce.DEFAULT_REFRESH_TOKEN,
    }
    async with sf.request("POST", "/services/oauth2/token", data={**form, "client_secret": "wrong"}) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_client"
    async with sf.request("POST", "/services/oauth2/token", data=form) as resp:
        grant = await resp.json()
    assert grant["token_type"] == "Bearer" and grant["instance_url"] == sf.url
    headers = {"Authorization": f"Bearer {grant['access_token']}"}
    async with sf.request("GET", DATA + "/sobjects/Contact", headers=headers) as resp:
        assert resp.status == 200
    assert "sandbox-client-secret" not in sf.state.requests[-2].body
    deadline = asyncio.get_running_loop().time() + 3
    while True:
        async with sf.request("GET", DATA + "/sobjects/Contact", headers=headers) as resp:
            if resp.status == 401:
                break
        assert asyncio.get_running_loop().time() < deadline, "token never expired"
        await asyncio.sleep(0.05)
    assert app[SALESFORCE].oauth.refreshes == 1


async def test_single_row_patch_and_delete_answer_204(sf: Running) -> None:
    """PATCH and DELETE of one row answer 204; a GET afterwards is 404 NOT_FOUND."""
    row = state(sf).insert("Contact", {"LastName": "Old"})
    path = f"{DATA}/sobjects/Contact/{row['Id']}"
    async with sf.request("PATCH", path, json={"Title": "Rear Admiral"}) as resp:
        assert resp.status == 204
    assert state(sf).table("Contact")[row["Id"]]["Title"] == "Rear Admiral"
    async with sf.request("DELETE", path) as resp:
        assert resp.status == 204
    async with sf.request("GET", path) as resp:
        assert resp.status == 404 and (await resp.json())[0]["errorCode"] == "NOT_FOUND"
