"""HubSpot translator: batch endpoints and their answers, as plain functions."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.errors import NotFound, UpstreamAuthFailed, UpstreamValidationError
from gateway.providers.base import Item, Target
from gateway.providers.hubspot import HubSpot, object_type

HS = HubSpot()
TARGET = Target(obj="contact", options={}, seed="s")


def test_object_type_plurals() -> None:
    """Collection objects map to HubSpot object types; custom ids stay as they are."""
    assert [object_type(o) for o in ("contact", "company", "deals", "2-1234")] == [
        "contacts",
        "companies",
        "deals",
        "2-1234",
    ]


def test_create_batch_sends_properties() -> None:
    """Creates go to batch/create with one input of properties per record, read-only ones dropped."""
    call = HS.write("create", [Item(0, None, {"email": "a@b.c", "hs_object_id": "1"})], TARGET)
    assert (call.method, call.path) == ("POST", "/crm/v3/objects/contacts/batch/create")
    assert call.json == {"inputs": [{"properties": {"email": "a@b.c"}}]}


def test_update_and_archive_carry_ids() -> None:
    """Updates and deletes name each record id in their batch inputs."""
    update = HS.write("update", [Item(0, "51", {"email": "x@y.z"})], TARGET)
    archive = HS.write("delete", [Item(0, "51", {})], TARGET)
    assert update.path.endswith("/batch/update") and update.json["inputs"] == [
        {"id": "51", "properties": {"email": "x@y.z"}}
    ]
    assert archive.path.endswith("/batch/archive") and archive.json == {"inputs": [{"id": "51"}]}


def test_multi_status_keeps_applied_and_reports_error() -> None:
    """A 207 answer keeps the applied ids and turns the first error into a failure."""
    body = {
        "status": "COMPLETE",
        "results": [{"id": "51", "properties": {}}],
        "errors": [{"category": "OBJECT_NOT_FOUND", "message": "Object not found. objectId=52"}],
    }
    written = HS.written("update", [Item(0, "51", {}), Item(1, "52", {})], body)
    assert written.ids == ["51"] and isinstance(written.failure, NotFound)


def test_fetch_and_fetched_round_trip() -> None:
    """The read-back asks for the properties and parses updatedAt."""
    call = HS.fetch(["51"], ["email", "firstname"], TARGET)
    assert call.json == {"properties": ["email", "firstname"], "inputs": [{"id": "51"}]}
    (record,) = HS.fetched(
        {"results": [{"id": "51", "properties": {"email": "a@b.c"}, "updatedAt": "2024-01-02T03:04:05.000Z"}]}
    )
    assert record.data == {"email": "a@b.c"}
    assert record.upstream_updated_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_errors_map_to_the_spec_table() -> None:
    """400 is a validation sentence, 401 an auth failure."""
    body = {"status": "error", "message": "Property values were not valid", "category": "VALIDATION_ERROR"}
    validation = HS.error_for(400, {}, body)
    assert isinstance(validation, UpstreamValidationError)
    assert validation.message == "Error: HubSpot validation error: `Property values were not valid`"
    assert isinstance(HS.error_for(401, {}, {"message": "expired"}), UpstreamAuthFailed)
