"""Stripe translator: one form-encoded call per record with an idempotency key, as plain functions."""

from __future__ import annotations

from gateway.errors import NotFound, RateLimited
from gateway.providers.base import Item, Target
from gateway.providers.stripe import Stripe, form_encode, resource

ST = Stripe()
TARGET = Target(obj="customer", options={}, seed="seed-1")


def test_form_encoding_uses_brackets() -> None:
    """Nested maps and lists flatten to Stripe's bracket notation; None unsets."""
    pairs = form_encode({"email": "a@b.c", "metadata": {"plan": "pro"}, "tags": ["x"], "ok": True, "phone": None})
    assert pairs == [("email", "a@b.c"), ("metadata[plan]", "pro"), ("tags[0]", "x"), ("ok", "true"), ("phone", "")]


def test_create_and_update_paths() -> None:
    """Creates POST the resource; updates POST the object; read-only fields are dropped."""
    create = ST.write("create", [Item(0, None, {"email": "a@b.c", "id": "cus_x"})], TARGET)
    update = ST.write("update", [Item(0, "cus_1", {"name": "P"})], TARGET)
    assert (create.method, create.path, create.form) == ("POST", "/v1/customers", [("email", "a@b.c")])
    assert (update.method, update.path) == ("POST", "/v1/customers/cus_1")
    assert resource("payment_intent") == "payment_intents"


def test_a_customer_object_written_back_drops_what_writes_do_not_take() -> None:
    """Answer-only fields never go; default_source goes on updates only (creates do not take it)."""
    whole = {"name": "P", "currency": "usd", "delinquent": False, "discount": None, "default_source": "card_1"}
    create = ST.write("create", [Item(0, None, whole)], TARGET)
    update = ST.write("update", [Item(0, "cus_1", whole)], TARGET)
    assert create.form == [("name", "P")]
    assert update.form == [("name", "P"), ("default_source", "card_1")]
    other = ST.write("create", [Item(0, None, {"currency": "usd"})], Target("payment_intent", {}, "s"))
    assert other.form == [("currency", "usd")]  # a payment intent's currency is a parameter


def test_idempotency_key_depends_on_seed_and_position() -> None:
    """The same seed and index give the same key; another index or seed another key."""

    def key(seed: str, index: int) -> str:
        call = ST.write("create", [Item(index, None, {})], Target(obj="customer", options={}, seed=seed))
        assert call.headers is not None
        return call.headers["Idempotency-Key"]

    assert key("a", 0) == key("a", 0)
    assert len({key("a", 0), key("a", 1), key("b", 0)}) == 3


def test_written_object_is_the_record() -> None:
    """The answer object is the full record; deletes give only the id."""
    written = ST.written("create", [Item(0, None, {})], {"id": "cus_1", "object": "customer", "email": "a@b.c"})
    assert written.records is not None and written.records[0].data["email"] == "a@b.c"
    assert ST.written("delete", [Item(0, "cus_1", {})], {"id": "cus_1", "deleted": True}).ids == ["cus_1"]


def test_errors() -> None:
    """resource_missing is 404 and 429 is rate_limited with the upstream's Retry-After."""
    missing = {"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such customer"}}
    assert isinstance(ST.error_for(404, {}, missing), NotFound)
    limited = ST.error_for(429, {"Retry-After": "3"}, {"error": {"message": "slow down"}})
    assert isinstance(limited, RateLimited) and limited.retry_after == 3
