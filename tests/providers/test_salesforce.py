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


def test_compound_fields_are_not_written() -> None:
    """A contact's Name, its addresses and any object value are computed; an account's Name is not."""
    read = {"LastName": "A", "Name": "P A", "MailingAddress": None, "Spot__c": {"latitude": 1}, "PhotoUrl": "/x"}
    contact = SF.write("update", [Item(0, "003x", read)], TARGET)
    assert contact.json["records"] == [{"attributes": {"type": "Contact"}, "LastName": "A", "id": "003x"}]
    account = SF.write("update", [Item(0, "001x", {"Name": "Acme"})], Target("account", {}, "s"))
    assert account.json["records"] == [{"attributes": {"type": "Account"}, "Name": "Acme", "id": "001x"}]


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


def _items(n: int) -> list[Item]:
    return [Item(i, None, {"LastName": f"L{i}"}) for i in range(n)]


def _saved(*ids: str) -> list[dict[str, object]]:
    return [{"id": i, "success": True, "errors": []} for i in ids]


def test_a_mutation_of_up_to_1000_records_is_one_write_call() -> None:
    """The chunk is 5 collections of 200, the most one Composite call may roll back together."""
    assert SF.chunk_size("create") == SF.chunk_size("delete") == 1000


def test_more_than_200_creates_become_one_all_or_none_composite_call() -> None:
    """450 creates are one Composite POST with allOrNone and collection subrequests of 200, 200 and 50."""
    call = SF.write("create", _items(450), TARGET)
    assert (call.method, call.path) == ("POST", "/services/data/v59.0/composite")
    assert call.json["allOrNone"] is True and call.json["collateSubrequests"] is False
    subrequests = call.json["compositeRequest"]
    assert [(s["method"], s["url"], s["referenceId"]) for s in subrequests] == [
        ("POST", "/services/data/v59.0/composite/sobjects", f"chunk{n}") for n in range(3)
    ]
    assert [len(s["body"]["records"]) for s in subrequests] == [200, 200, 50]
    assert subrequests[2]["body"]["records"][49]["LastName"] == "L449"


def test_more_than_200_deletes_put_the_ids_in_each_subrequest_url() -> None:
    """Composite DELETE subrequests carry ?ids=...&allOrNone=true in their url, commas unescaped."""
    items = [Item(i, f"003{i:015d}", {}) for i in range(201)]
    subrequests = SF.write("delete", items, TARGET).json["compositeRequest"]
    assert [s["method"] for s in subrequests] == ["DELETE", "DELETE"] and "body" not in subrequests[0]
    assert subrequests[1]["url"] == f"/services/data/v59.0/composite/sobjects?ids=003{200:015d}&allOrNone=true"


def test_composite_answer_gives_every_id_in_request_order() -> None:
    """Successful subrequests' SaveResults are joined in order into the written ids."""
    body = {
        "compositeResponse": [
            {"body": _saved("003A", "003B"), "httpHeaders": {}, "httpStatusCode": 200, "referenceId": "chunk0"},
            {"body": _saved("003C"), "httpHeaders": {}, "httpStatusCode": 200, "referenceId": "chunk1"},
        ]
    }
    written = SF.written("create", _items(3), body)
    assert written.ids == ["003A", "003B", "003C"] and written.failure is None


def test_rolled_back_composite_reports_the_failing_records_message() -> None:
    """Halted subrequests are skipped; the failing one's real error is the sentence, and nothing applied."""
    halted = [{"errorCode": "PROCESSING_HALTED", "message": "The transaction was rolled back"}]
    failing = [
        {"success": False, "errors": [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "rolled back"}]},
        {"success": False, "errors": [{"statusCode": "INVALID_EMAIL_ADDRESS", "message": "Invalid email"}]},
    ]
    body = {
        "compositeResponse": [
            {"body": halted, "httpHeaders": {}, "httpStatusCode": 400, "referenceId": "chunk0"},
            {"body": failing, "httpHeaders": {}, "httpStatusCode": 400, "referenceId": "chunk1"},
        ]
    }
    written = SF.written("create", _items(202), body)
    assert written.ids == [] and isinstance(written.failure, UpstreamValidationError)
    assert written.failure.message == "Error: Salesforce validation error: `Invalid email`"


def test_a_subrequest_error_list_is_mapped_like_a_direct_answer() -> None:
    """A subrequest refused whole (an error list, not SaveResults) maps through the error table."""
    refused = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
    body = {"compositeResponse": [{"body": refused, "httpHeaders": {}, "httpStatusCode": 404, "referenceId": "c"}]}
    assert isinstance(SF.written("update", [Item(0, "003A", {})], body).failure, NotFound)


def test_read_back_past_200_ids_is_one_composite_of_gets() -> None:
    """Reading back 450 ids is one Composite call (not all-or-none) of 3 GET retrieves of at most 200 ids."""
    ids = [f"003{i:015d}" for i in range(450)]
    call = SF.fetch(ids, ["LastName"], TARGET)
    assert (call.method, call.path, call.json["allOrNone"]) == ("POST", "/services/data/v59.0/composite", False)
    urls = [s["url"] for s in call.json["compositeRequest"]]
    assert all(u.startswith("/services/data/v59.0/composite/sobjects/Contact?ids=") for u in urls)
    assert [u.split("ids=")[1].split("&")[0].count(",") + 1 for u in urls] == [200, 200, 50]


def test_fetched_joins_composite_rows_and_skips_failed_subrequests() -> None:
    """Rows of every successful GET subrequest are read; a failed one leaves its records absent."""
    row = {"attributes": {"type": "Contact"}, "Id": "003A", "LastModifiedDate": "2024-11-10T18:39:00.000+0000"}
    body = {
        "compositeResponse": [
            {"body": [row], "httpHeaders": {}, "httpStatusCode": 200, "referenceId": "chunk0"},
            {
                "body": [{"errorCode": "X", "message": "m"}],
                "httpHeaders": {},
                "httpStatusCode": 400,
                "referenceId": "b",
            },
        ]
    }
    assert [r.upstream_id for r in SF.fetched(body)] == ["003A"]


def test_rolled_back_subrequests_before_the_failing_one_do_not_hide_its_message() -> None:
    """Earlier subrequests answering with rolled-back SaveResults are passed over for the real error."""
    rolled = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "rolled back"}
    bad = {"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [LastName]"}
    body = {
        "compositeResponse": [
            {"body": [{"success": False, "errors": [rolled]}], "httpStatusCode": 400, "referenceId": "chunk0"},
            {"body": [{"success": False, "errors": [bad]}], "httpStatusCode": 400, "referenceId": "chunk1"},
        ]
    }
    failure = SF.written("create", _items(2), body).failure
    assert failure is not None and failure.message.endswith("`Required fields are missing: [LastName]`")
