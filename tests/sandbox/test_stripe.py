"""Stripe sandbox fidelity: form encoding, customer shape, errors, idempotency, auth, list and 429."""

from __future__ import annotations

import base64

import pytest

from gateway.sandbox import stripe
from tests.sandbox.conftest import Running, Start

CUSTOMERS = "/v1/customers"


@pytest.fixture
async def st(sandbox: Start) -> Running:
    return await sandbox(stripe.create_app(), headers={"Authorization": f"Bearer {stripe.DEFAULT_KEY}"})


async def test_create_with_nested_metadata_and_basic_auth(sandbox: Start) -> None:
    """A form POST with metadata[k]=v, authenticated by basic auth, creates a customer object."""
    running = await sandbox(stripe.create_app())
    auth = {"Authorization": "Basic " + base64.b64encode(f"{stripe.DEFAULT_KEY}:".encode()).decode()}
    form = {"email": "a@b.co", "name": "Ada", "metadata[plan]": "pro", "address[city]": "Paris"}
    async with running.request("POST", CUSTOMERS, data=form, headers=auth) as resp:
        assert resp.status == 200 and resp.headers["Request-Id"].startswith("req_")
        customer = await resp.json()
    assert customer["id"].startswith("cus_") and customer["object"] == "customer"
    assert customer["metadata"] == {"plan": "pro"} and customer["address"] == {"city": "Paris"}
    assert customer["livemode"] is False and isinstance(customer["created"], int)


async def test_invalid_email_and_unknown_parameter_errors(st: Running) -> None:
    """A bad email gets email_invalid (param email); an unknown parameter gets parameter_unknown."""
    async with st.request("POST", CUSTOMERS, data={"email": "nope"}) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "email_invalid", "email")
    async with st.request("POST", CUSTOMERS, data={"shoe": "9"}) as resp:
        assert (await resp.json())["error"]["code"] == "parameter_unknown"


async def test_update_merges_metadata_and_empty_unsets_a_key(st: Running) -> None:
    """An update merges metadata keys, ``metadata[k]=`` unsets one, and plain fields are set."""
    customer = stripe_state(st).insert({"email": "a@b.co", "metadata": {"a": "1", "b": "2"}})
    async with st.request(
        "POST", f"{CUSTOMERS}/{customer['id']}", data={"metadata[a]": "", "metadata[c]": "3", "name": "N"}
    ) as resp:
        updated = await resp.json()
    assert updated["metadata"] == {"b": "2", "c": "3"} and updated["name"] == "N"


async def test_delete_leaves_a_stub_that_cannot_be_updated(st: Running) -> None:
    """DELETE answers {id, object, deleted: true}; GET returns that stub; an update is 404 resource_missing."""
    customer = stripe_state(st).insert({"email": "a@b.co"})
    path = f"{CUSTOMERS}/{customer['id']}"
    async with st.request("DELETE", path) as resp:
        assert await resp.json() == {"id": customer["id"], "object": "customer", "deleted": True}
    async with st.request("GET", path) as resp:
        assert (await resp.json())["deleted"] is True
    async with st.request("POST", path, data={"name": "again"}) as resp:
        assert resp.status == 404
        error = (await resp.json())["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "resource_missing", "id")


async def test_empty_metadata_unsets_every_key_and_bad_integers_are_refused(st: Running) -> None:
    """``metadata=""`` clears the metadata; a non-integer balance is parameter_invalid_integer."""
    customer = stripe_state(st).insert({"metadata": {"a": "1"}})
    async with st.request("POST", f"{CUSTOMERS}/{customer['id']}", data={"metadata": ""}) as resp:
        assert (await resp.json())["metadata"] == {}
    async with st.request("POST", CUSTOMERS, data={"balance": "ten"}) as resp:
        error = (await resp.json())["error"]
    assert (error["code"], error["param"]) == ("parameter_invalid_integer", "balance")


async def test_idempotency_key_replays_and_refuses_other_params(st: Running) -> None:
    """The same key and params replays the answer; the same key with other params is an idempotency_error."""
    headers = {"Idempotency-Key": "k-1"}
    async with st.request("POST", CUSTOMERS, data={"email": "a@b.co"}, headers=headers) as resp:
        first = await resp.json()
    async with st.request("POST", CUSTOMERS, data={"email": "a@b.co"}, headers=headers) as resp:
        assert resp.headers["Idempotent-Replayed"] == "true"
        assert await resp.json() == first
    assert len(stripe_state(st).table("customers")) == 1
    async with st.request("POST", CUSTOMERS, data={"email": "z@b.co"}, headers=headers) as resp:
        assert resp.status == 400 and (await resp.json())["error"]["type"] == "idempotency_error"


async def test_list_pages_newest_first(st: Running) -> None:
    """GET /v1/customers is a list object, newest first, paged with starting_after and has_more."""
    stripe.seed(stripe_state(st))
    async with st.request("GET", CUSTOMERS + "?limit=2") as resp:
        page = await resp.json()
    assert page["object"] == "list" and page["url"] == CUSTOMERS and page["has_more"] is True
    assert [c["name"] for c in page["data"]] == ["Alan Turing", "Grace Hopper"]
    async with st.request("GET", f"{CUSTOMERS}?limit=2&starting_after={page['data'][-1]['id']}") as resp:
        rest = await resp.json()
    assert [c["name"] for c in rest["data"]] == ["Ada Lovelace"] and rest["has_more"] is False


async def test_wrong_key_is_401(st: Running) -> None:
    """A wrong secret key gets 401 invalid_request_error."""
    async with st.http.get(st.url + CUSTOMERS, headers={"Authorization": "Bearer sk_test_wrong"}) as resp:
        assert resp.status == 401 and (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_over_the_limit_is_429_rate_limit(st: Running) -> None:
    """Past the rate limit the answer is 429 with code rate_limit."""
    st.state.set_knobs(rate_limit=1, rate_window=10)
    async with st.request("GET", CUSTOMERS):
        pass
    async with st.request("GET", CUSTOMERS) as resp:
        assert resp.status == 429 and (await resp.json())["error"]["code"] == "rate_limit"
        assert "Retry-After" not in resp.headers  # Stripe's 429s say nothing of when to retry


def stripe_state(running: Running) -> stripe.StripeState:
    assert isinstance(running.state, stripe.StripeState)
    return running.state


async def test_list_parameters_in_brackets_become_lists(st: Running) -> None:
    """``preferred_locales[]=`` and ``preferred_locales[0]=`` both build a list, as Stripe reads them."""
    form = [("preferred_locales[]", "fr"), ("preferred_locales[]", "en")]
    async with st.request("POST", CUSTOMERS, data=form) as resp:
        assert (await resp.json())["preferred_locales"] == ["fr", "en"]
    async with st.request("POST", CUSTOMERS, data={"preferred_locales[0]": "de"}) as resp:
        assert (await resp.json())["preferred_locales"] == ["de"]
