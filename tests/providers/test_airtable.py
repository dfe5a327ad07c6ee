"""Airtable translator: 10-record calls under the sync's base, as plain functions."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidRequest, NotFound
from gateway.providers.airtable import Airtable
from gateway.providers.base import Item, Target

AT = Airtable()
TARGET = Target(obj="My Contacts", options={"base_id": "appABC123"}, seed="s")


def test_create_posts_fields_to_quoted_table() -> None:
    """Creates POST ``records`` of ``fields`` to the base and URL-quoted table."""
    call = AT.write("create", [Item(0, None, {"Name": "Paul"})], TARGET)
    assert (call.method, call.path) == ("POST", "/v0/appABC123/My%20Contacts")
    assert call.json == {"records": [{"fields": {"Name": "Paul"}}]}


def test_update_patches_and_delete_lists_ids() -> None:
    """Updates PATCH with ids; deletes pass ``records[]`` query parameters."""
    update = AT.write("update", [Item(0, "rec1", {"Name": "P"})], TARGET)
    delete = AT.write("delete", [Item(0, "rec1", {}), Item(1, "rec2", {})], TARGET)
    assert update.method == "PATCH" and update.json == {"records": [{"id": "rec1", "fields": {"Name": "P"}}]}
    assert delete.method == "DELETE" and delete.query == [("records[]", "rec1"), ("records[]", "rec2")]


def test_missing_base_id_names_the_option() -> None:
    """A sync without options.base_id is a 400 naming that option."""
    with pytest.raises(InvalidRequest, match="base_id"):
        AT.write("create", [Item(0, None, {})], Target(obj="t", options={}, seed=""))


def test_write_answer_is_the_full_record() -> None:
    """The write answer is parsed into records, so nothing is read back."""
    written = AT.written("create", [Item(0, None, {})], {"records": [{"id": "rec1", "fields": {"Name": "Paul"}}]})
    assert written.ids == ["rec1"] and written.records is not None and written.records[0].data == {"Name": "Paul"}
    assert AT.fetch(["rec1"], [], TARGET) is None


def test_error_bodies() -> None:
    """Typed errors give their message; NOT_FOUND maps to 404."""
    error = AT.error_for(422, {}, {"error": {"type": "INVALID_VALUE_FOR_COLUMN", "message": "Field Email bad"}})
    assert error.message == "Error: Airtable validation error: `Field Email bad`"
    assert isinstance(AT.error_for(404, {}, {"error": "NOT_FOUND"}), NotFound)
