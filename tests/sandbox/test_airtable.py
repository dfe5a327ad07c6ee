"""Airtable sandbox fidelity: record shape, 10-record writes, typecast, errors, per-base limit and penalty."""

from __future__ import annotations

import asyncio

import pytest

from gateway.sandbox import airtable
from gateway.sandbox.airtable import DEFAULT_BASE, AirtableState
from tests.sandbox.conftest import Running, Start

AUTH = {"Authorization": f"Bearer {airtable.DEFAULT_TOKEN}"}
TABLE = f"/v0/{DEFAULT_BASE}/Contacts"


@pytest.fixture
async def at(sandbox: Start) -> Running:
    running = await sandbox(airtable.create_app(), headers=AUTH)
    running.state.set_knobs(rate_limit=1000)  # most tests are not about the limit
    return running


def state(running: Running) -> AirtableState:
    assert isinstance(running.state, AirtableState)
    return running.state


async def test_create_get_and_empty_fields_left_out(at: Running) -> None:
    """Created records are {id: rec + 14, createdTime, fields} and empty cells are omitted."""
    body = {"records": [{"fields": {"Name": "Ada", "Email": "a@b.co", "Notes": ""}}]}
    async with at.request("POST", TABLE, json=body) as resp:
        assert resp.status == 200
        [record] = (await resp.json())["records"]
    assert record["id"].startswith("rec") and len(record["id"]) == 17
    assert record["fields"] == {"Name": "Ada", "Email": "a@b.co"} and record["createdTime"].endswith("Z")
    async with at.request("GET", f"{TABLE}/{record['id']}") as resp:
        assert await resp.json() == record


async def test_writes_take_at_most_10_records(at: Running) -> None:
    """Eleven records in one create are refused with 422."""
    async with at.request("POST", TABLE, json={"records": [{"fields": {"Name": "x"}}] * 11}) as resp:
        assert resp.status == 422 and (await resp.json())["error"]["type"] == "INVALID_RECORDS"


async def test_bad_values_and_typecast(at: Running) -> None:
    """A string in a number column is INVALID_VALUE_FOR_COLUMN unless typecast; unknown fields are refused."""
    async with at.request("POST", TABLE, json={"records": [{"fields": {"Age": "42"}}]}) as resp:
        assert resp.status == 422 and (await resp.json())["error"]["type"] == "INVALID_VALUE_FOR_COLUMN"
    async with at.request("POST", TABLE, json={"records": [{"fields": {"Age": "42"}}], "typecast": True}) as resp:
        assert (await resp.json())["records"][0]["fields"] == {"Age": 42}
    async with at.request("POST", TABLE, json={"fields": {"Email": "nope"}}) as resp:
        assert (await resp.json())["error"]["type"] == "INVALID_VALUE_FOR_COLUMN"
    async with at.request("POST", TABLE, json={"fields": {"Shoe": 9}}) as resp:
        assert (await resp.json())["error"]["type"] == "UNKNOWN_FIELD_NAME"


async def test_patch_merges_fields(at: Running) -> None:
    """PATCH {records: [{id, fields}]} keeps the fields it does not name."""
    one = state(at).insert(DEFAULT_BASE, "Contacts", {"Name": "A", "Email": "a@b.co"})
    async with at.request("PATCH", TABLE, json={"records": [{"id": one["id"], "fields": {"Name": "A2"}}]}) as resp:
        [updated] = (await resp.json())["records"]
    assert updated["fields"] == {"Name": "A2", "Email": "a@b.co"}


async def test_delete_by_query_then_get_is_404(at: Running) -> None:
    """DELETE ?records[]= answers {records: [{id, deleted}]}; the record is then 404 NOT_FOUND."""
    one = state(at).insert(DEFAULT_BASE, "Contacts", {"Name": "A"})
    two = state(at).insert(DEFAULT_BASE, "Contacts", {"Name": "B"})
    async with at.request("DELETE", TABLE, params=[("records[]", one["id"]), ("records[]", two["id"])]) as resp:
        deleted = await resp.json()
    assert deleted == {"records": [{"id": one["id"], "deleted": True}, {"id": two["id"], "deleted": True}]}
    async with at.request("GET", f"{TABLE}/{one['id']}") as resp:
        assert resp.status == 404 and (await resp.json())["error"]["type"] == "NOT_FOUND"


async def test_list_pages_with_offset(at: Running) -> None:
    """List returns pageSize records and an offset until the last page."""
    airtable.seed(state(at))
    async with at.request("GET", TABLE + "?pageSize=2") as resp:
        first = await resp.json()
    async with at.request("GET", TABLE, params={"pageSize": "2", "offset": first["offset"]}) as resp:
        second = await resp.json()
    assert len(first["records"]) == 2 and len(second["records"]) == 1 and "offset" not in second


async def test_unknown_base_is_403(at: Running) -> None:
    """An unknown base is 403 INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND."""
    async with at.request("GET", "/v0/appNope0000000000/Contacts") as resp:
        assert resp.status == 403
        assert (await resp.json())["error"]["type"] == "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND"


async def test_bad_token_is_401(at: Running) -> None:
    """A wrong personal access token is 401 AUTHENTICATION_REQUIRED."""
    async with at.http.get(at.url + TABLE, headers={"Authorization": "Bearer pat-wrong"}) as resp:
        assert resp.status == 401 and (await resp.json())["error"]["type"] == "AUTHENTICATION_REQUIRED"


async def test_rate_limit_is_per_base_with_a_penalty(sandbox: Start) -> None:
    """Past 5 requests/s on a base every request to it gets 429 until the penalty ends; other bases pass."""
    bases = {DEFAULT_BASE: airtable.DEFAULT_TABLES, "appOtherBase00001": airtable.DEFAULT_TABLES}
    at = await sandbox(airtable.create_app(bases=bases), headers=AUTH)
    at.state.set_knobs(penalty=0.5)
    statuses = []
    for _ in range(6):
        async with at.request("GET", TABLE) as resp:
            statuses.append(resp.status)
            body = await resp.json()
    assert statuses == [200] * 5 + [429] and "Retry-After" not in resp.headers  # Airtable: wait 30 s
    assert body["errors"][0]["error"] == "RATE_LIMIT_REACHED"
    async with at.request("GET", "/v0/appOtherBase00001/Contacts") as resp:
        assert resp.status == 200
    loop = asyncio.get_running_loop()
    breach = loop.time()
    deadline = breach + 5
    while True:
        async with at.request("GET", TABLE) as resp:
            if resp.status == 200:
                break
        assert loop.time() < deadline, "penalty never ended"
        await asyncio.sleep(0.05)
    assert loop.time() - breach >= 0.4


async def test_injected_validation_error_is_a_422(at: Running) -> None:
    """The one-shot validation knob refuses the next write with 422 and then clears itself."""
    at.state.set_knobs(validation_errors=1)
    async with at.request("POST", TABLE, json={"fields": {"Name": "A"}}) as resp:
        assert resp.status == 422 and (await resp.json())["error"]["type"] == "INVALID_VALUE_FOR_COLUMN"
    async with at.request("POST", TABLE, json={"fields": {"Name": "A"}}) as resp:
        assert resp.status == 200
