"""HubSpot sandbox fidelity: object shape, batches, validation errors, rate-limit headers and 429."""

from __future__ import annotations

import pytest

from gateway.sandbox import hubspot
from gateway.sandbox.hubspot import HubSpotState
from tests.sandbox.conftest import Running, Start

AUTH = {"Authorization": f"Bearer {hubspot.DEFAULT_TOKEN}"}
CONTACTS = "/crm/v3/objects/contacts"


@pytest.fixture
async def hs(sandbox: Start) -> Running:
    return await sandbox(hubspot.create_app(), headers=AUTH)


def state(running: Running) -> HubSpotState:
    assert isinstance(running.state, HubSpotState)
    return running.state


async def test_create_and_get_have_hubspot_object_shape(hs: Running) -> None:
    """An object is {id, properties, createdAt, updatedAt, archived} with string property values."""
    async with hs.request("POST", CONTACTS, json={"properties": {"email": "a@b.co", "firstname": "Ada"}}) as resp:
        assert resp.status == 201
        created = await resp.json()
    assert set(created) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert created["id"].isdigit() and created["properties"]["hs_object_id"] == created["id"]
    async with hs.request("GET", f"{CONTACTS}/{created['id']}?properties=firstname") as resp:
        got = await resp.json()
    assert got["properties"]["firstname"] == "Ada" and "email" not in got["properties"]
    assert got["createdAt"].endswith("Z") and got["archived"] is False


async def test_invalid_email_is_a_validation_error(hs: Running) -> None:
    """A bad email gets 400 with category VALIDATION_ERROR and an INVALID_EMAIL entry in errors."""
    async with hs.request("POST", CONTACTS, json={"properties": {"email": "nope"}}) as resp:
        assert resp.status == 400
        body = await resp.json()
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR" and body["correlationId"]
    assert body["errors"][0]["code"] == "INVALID_EMAIL"


async def test_batch_create_is_refused_whole_when_one_input_is_invalid(hs: Running) -> None:
    """One invalid input fails batch/create with 400 and writes nothing."""
    inputs = [{"properties": {"email": "ok@b.co"}}, {"properties": {"shoe_size": "9"}}]
    async with hs.request("POST", CONTACTS + "/batch/create", json={"inputs": inputs}) as resp:
        assert resp.status == 400
        assert (await resp.json())["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    assert state(hs).table("contacts") == {}


async def test_batch_create_answers_201_complete(hs: Running) -> None:
    """batch/create answers 201 {status: COMPLETE, results} and stores every input."""
    inputs = [{"properties": {"email": f"p{i}@b.co"}} for i in range(3)]
    async with hs.request("POST", CONTACTS + "/batch/create", json={"inputs": inputs}) as resp:
        assert resp.status == 201
        created = await resp.json()
    assert created["status"] == "COMPLETE" and len(created["results"]) == 3
    assert {r["id"] for r in created["results"]} == set(state(hs).table("contacts"))


async def test_batch_update_with_an_unknown_id_answers_207(hs: Running) -> None:
    """batch/update applies the known ids and answers 207 with OBJECT_NOT_FOUND naming the unknown ones."""
    known = state(hs).insert("contacts", {"email": "a@b.co"})["id"]
    update = [{"id": known, "properties": {"firstname": "Z"}}, {"id": "999999", "properties": {}}]
    async with hs.request("POST", CONTACTS + "/batch/update", json={"inputs": update}) as resp:
        assert resp.status == 207
        body = await resp.json()
    assert body["results"][0]["properties"]["firstname"] == "Z"
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND" and body["errors"][0]["context"]["ids"] == ["999999"]


async def test_batch_read_returns_the_asked_properties(hs: Running) -> None:
    """batch/read answers 200 with each object's requested properties."""
    known = state(hs).insert("contacts", {"email": "a@b.co", "firstname": "Ada"})["id"]
    read = {"inputs": [{"id": known}], "properties": ["firstname"]}
    async with hs.request("POST", CONTACTS + "/batch/read", json=read) as resp:
        assert resp.status == 200
        [obj] = (await resp.json())["results"]
    assert obj["properties"]["firstname"] == "Ada" and "email" not in obj["properties"]


async def test_batch_archive_answers_204_and_removes(hs: Running) -> None:
    """batch/archive answers 204 and the objects are gone."""
    known = state(hs).insert("contacts", {"email": "a@b.co"})["id"]
    async with hs.request("POST", CONTACTS + "/batch/archive", json={"inputs": [{"id": known}]}) as resp:
        assert resp.status == 204
    assert state(hs).table("contacts") == {}


async def test_batches_refuse_more_than_100_inputs(hs: Running) -> None:
    """101 inputs are refused with 400 VALIDATION_ERROR."""
    inputs = [{"properties": {"email": "a@b.co"}}] * 101
    async with hs.request("POST", CONTACTS + "/batch/create", json={"inputs": inputs}) as resp:
        assert resp.status == 400 and (await resp.json())["category"] == "VALIDATION_ERROR"


async def test_list_pages_with_after_cursor(hs: Running) -> None:
    """GET objects pages by ``limit`` and hands back ``paging.next.after``."""
    hubspot.seed(state(hs))
    async with hs.request("GET", CONTACTS + "?limit=2") as resp:
        first = await resp.json()
    after = first["paging"]["next"]["after"]
    async with hs.request("GET", f"{CONTACTS}?limit=2&after={after}") as resp:
        second = await resp.json()
    assert len(first["results"]) == 2 and len(second["results"]) == 1 and "paging" not in second


async def test_rate_limit_headers_and_429_body(hs: Running) -> None:
    """Every answer carries X-HubSpot-RateLimit-*; over the limit the answer is 429 RATE_LIMITS."""
    hs.state.set_knobs(rate_limit=2, rate_window=10, daily_limit=100)
    async with hs.request("GET", CONTACTS) as resp:
        headers = resp.headers
    assert headers["X-HubSpot-RateLimit-Max"] == "2" and headers["X-HubSpot-RateLimit-Remaining"] == "1"
    assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert headers["X-HubSpot-RateLimit-Daily"] == "100" and headers["X-HubSpot-RateLimit-Daily-Remaining"] == "99"
    async with hs.request("GET", CONTACTS):
        pass
    async with hs.request("GET", CONTACTS) as resp:
        assert resp.status == 429
        body = await resp.json()
    assert body["category"] == "RATE_LIMITS" and body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert resp.headers["X-HubSpot-RateLimit-Remaining"] == "0" and int(resp.headers["Retry-After"]) >= 1


async def test_bad_token_is_refused(hs: Running) -> None:
    """A wrong bearer token gets 401 INVALID_AUTHENTICATION."""
    async with hs.http.get(hs.url + CONTACTS, headers={"Authorization": "Bearer x"}) as resp:
        assert resp.status == 401 and (await resp.json())["category"] == "INVALID_AUTHENTICATION"


async def test_missing_object_is_404(hs: Running) -> None:
    """GET of an unknown id answers 404 OBJECT_NOT_FOUND."""
    async with hs.request("GET", CONTACTS + "/424242") as resp:
        assert resp.status == 404 and (await resp.json())["category"] == "OBJECT_NOT_FOUND"
