"""Salesforce translator: sObject Collections calls and SaveResult parsing, as plain functions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.errors import InvalidRequest, NotFound, UpstreamValidationError
from gateway.providers.base import Item, Target
from gateway.providers.salesforce import Salesforce, sobject_type

SF = Salesforce()
TARGET = Target(obj="contact", options={}, seed="s")


def test_sobject_type_from_collection_object() -> None:
    """Collection objects become sObject names; custom objects keep their API name."""
    assert sobject_type("contact") == "Contact"
    assert sobject_type("opportunity_line_item") == "OpportunityLineItem"
    assert sobject_type("Invoice__c") == "Invoice__c"


def test_create_posts_all_or_none_collection_with_type() -> None:
    """Creates POST the collection endpoint with allOrNone and each record's sObject type."""
    call = SF.write("create", [Item(0, None, {"LastName": "Atreides", "Id": "x", "attributes": {}})], TARGET)
    assert (call.method, call.path) == ("POST", "/services/data/v59.0/composite/sobjects")
    assert call.json == {"allOrNone": True, "records": [{"attributes": {"type": "Contact"}, "LastName": "Atreides"}]}


def test_update_patches_with_ids_and_api_version_option() -> None:
    """Updates PATCH with each record's id under the sync's api_version."""
    target = Target(obj="contact", options={"api_version": "v60.0"}, seed="s")
    call = SF.write("update", [Item(0, "003A", {"Email": "a@b.c"})], target)
    assert (call.method, call.path) == ("PATCH", "/services/data/v60.0/composite/sobjects")
    assert call.json["records"][0] == {"attributes": {"type": "Contact"}, "Email": "a@b.c", "id": "003A"}


def test_bad_api_version_option_is_refused() -> None:
    """An api_version that could change the path is a 400 naming the option."""
    with pytest.raises(InvalidRequest, match="api_version"):
        SF.write("create", [Item(0, None, {})], Target(obj="contact", options={"api_version": "../x"}, seed=""))


def test_delete_uses_ids_query_with_all_or_none() -> None:
    """Deletes send the ids in the query string with allOrNone=true."""
    call = SF.write("delete", [Item(0, "003A", {}), Item(1, "003B", {})], TARGET)
    assert call.method == "DELETE"
    assert call.query == [("ids", "003A,003B"), ("allOrNone", "true")]


def test_written_reads_ids_in_order() -> None:
    """Successful SaveResults give the new ids in request order."""
    body = [{"id": "003A", "success": True, "errors": []}, {"id": "003B", "success": True, "errors": []}]
    written = SF.written("create", [Item(0, None, {}), Item(1, None, {})], body)
    assert written.ids == ["003A", "003B"] and written.failure is None


def test_refused_batch_reports_the_real_error_not_the_rollback() -> None:
    """With allOrNone the first non-rollback error becomes the validation sentence and nothing is applied."""
    body = [
        {"success": False, "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "rolled back"}]},
        {"success": False, "errors": [{"statusCode": "INVALID_EMAIL_ADDRESS", "message": "Invalid email"}]},
    ]
    written = SF.written("create", [Item(0, None, {}), Item(1, None, {})], body)
    assert written.ids == []
    assert isinstance(written.failure, UpstreamValidationError)
    assert written.failure.message == "Error: Salesforce validation error: `Invalid email`"


def test_missing_record_is_not_found() -> None:
    """An ENTITY_IS_DELETED SaveResult maps to 404."""
    body = [{"id": "003A", "success": False, "errors": [{"statusCode": "ENTITY_IS_DELETED", "message": "deleted"}]}]
    assert isinstance(SF.written("update", [Item(0, "003A", {})], body).failure, NotFound)


def test_fetch_asks_for_written_fields_plus_id_and_modified_date() -> None:
    """The read-back names the ids and the fields to return, Id and LastModifiedDate always."""
    call = SF.fetch(["003A"], ["Email", "FirstName", "Id"], TARGET)
    assert (call.method, call.path) == ("GET", "/services/data/v59.0/composite/sobjects/Contact")
    assert call.query == [("ids", "003A"), ("fields", "Id,LastModifiedDate,Email,FirstName")]


def test_fetched_strips_attributes_and_parses_modified_date() -> None:
    """Fetched rows become record data without ``attributes``; nulls for missing ids are skipped."""
    body = [
        {"attributes": {"type": "Contact"}, "Id": "003A", "LastModifiedDate": "2024-11-10T18:39:00.000+0000"},
        None,
    ]
    (record,) = SF.fetched(body)
    assert record.upstream_id == "003A" and "attributes" not in record.data
    assert record.upstream_updated_at == datetime(2024, 11, 10, 18, 39, tzinfo=UTC)


def test_error_body_becomes_sentence() -> None:
    """A 400 error list is read into the reference docs' validation sentence."""
    error = SF.error_for(400, {}, [{"message": "Invalid email", "errorCode": "INVALID_EMAIL_ADDRESS"}])
    assert error.status == 400 and error.message == "Error: Salesforce validation error: `Invalid email`"
