"""Change capture is pure: page requests from cursors, pages to sightings, on fixture answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.providers.base import Target
from gateway.providers.capture import capture
from gateway.providers.capture.airtable import AirtableCapture
from gateway.providers.capture.base import CaptureError, Cursor, Seen
from gateway.providers.capture.hubspot import HubSpotCapture
from gateway.providers.capture.salesforce import SalesforceCapture
from gateway.providers.capture.stripe import MAX_TIES, StripeCapture, event_types

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def sf_row(upstream_id: str, stamp: str, *, deleted: bool = False) -> dict[str, Any]:
    return {
        "attributes": {"type": "Contact"},
        "Id": upstream_id,
        "LastName": "X",
        "IsDeleted": deleted,
        "LastModifiedDate": stamp,
        "SystemModstamp": stamp,
    }


def sf_id(n: int) -> str:
    return f"003Dn000000{n:04d}AAA"


def test_salesforce_backfill_then_live_soql_with_ties_across_pages() -> None:
    sf = SalesforceCapture()
    target = Target("contact", {}, "")
    cursor = sf.start(NOW)
    call = sf.request(cursor, target)
    assert call.path == "/services/data/v59.0/queryAll"  # deleted rows too, even in the backfill
    assert call.query == [("q", "SELECT FIELDS(ALL) FROM Contact ORDER BY SystemModstamp, Id LIMIT 200")]
    t1, t2 = "2026-01-01T00:00:00.000+0000", "2026-01-01T00:00:01.500+0000"
    full = [sf_row(sf_id(i), t1) for i in range(199)] + [sf_row(sf_id(199), t2)]
    page = sf.page(cursor, {"done": True, "totalSize": 200, "records": full})
    assert len(page.seen) == 200 and not page.caught_up and page.backfilled == 200
    assert page.cursor["since"] == "2026-01-01T00:00:01.500Z" and page.cursor["ids"] == [sf_id(199)]
    q = sf.request(page.cursor, target).query
    assert q == [
        (
            "q",
            "SELECT FIELDS(ALL) FROM Contact WHERE SystemModstamp >= 2026-01-01T00:00:01.500Z "
            "ORDER BY SystemModstamp, Id LIMIT 200",
        )
    ]
    # the tie at t2 is read again and skipped; a new record at the same instant is not lost
    tail = sf.page(page.cursor, {"done": True, "records": [sf_row(sf_id(199), t2), sf_row(sf_id(300), t2)]})
    assert [s.upstream_id for s in tail.seen] == [sf_id(300)]
    assert tail.caught_up and tail.cursor["phase"] == "live"
    assert sf.request(tail.cursor, target).path == "/services/data/v59.0/queryAll"
    gone = sf.page(
        tail.cursor, {"done": True, "records": [sf_row(sf_id(5), "2026-01-01T00:00:02.000+0000", deleted=True)]}
    )
    assert gone.seen == [Seen(sf_id(5), None, datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC))]


def test_salesforce_follows_next_records_url_and_pages_through_one_instant() -> None:
    sf = SalesforceCapture()
    target = Target("contact", {}, "")
    t1 = "2026-01-01T00:00:00.000+0000"
    cursor: Cursor = {**sf.start(NOW), "phase": "live"}
    first = sf.page(
        cursor,
        {
            "done": False,
            "nextRecordsUrl": "/services/data/v59.0/query/01g-100",
            "records": [sf_row(sf_id(i), t1) for i in range(100)],
        },
    )
    assert sf.request(first.cursor, target).path == "/services/data/v59.0/query/01g-100"
    second = sf.page(first.cursor, {"done": True, "records": [sf_row(sf_id(i), t1) for i in range(100, 200)]})
    assert not second.caught_up and second.cursor["since"] == "2026-01-01T00:00:00Z"  # the SOQL reference's form
    assert "WHERE SystemModstamp >= 2026-01-01T00:00:00Z ORDER BY" in sf.request(second.cursor, target).query[0][1]  # type: ignore[index]
    # 200 records in one instant after a query from that same instant: page on by Id
    again = sf.page(second.cursor, {"done": True, "records": [sf_row(sf_id(i), t1) for i in range(200)]})
    assert again.seen == [] and again.cursor["after"] == sf_id(199)
    assert "Id > '" + sf_id(199) + "'" in sf.request(again.cursor, target).query[0][1]  # type: ignore[index]


def test_salesforce_refuses_garbage() -> None:
    sf = SalesforceCapture()
    for body in (
        None,
        "<html>",
        {"records": "x"},
        {"records": [{"Id": "003"}]},
        {"records": [{"SystemModstamp": "x"}]},
    ):
        with pytest.raises(CaptureError):
            sf.page(sf.start(NOW), body)


def hs_row(upstream_id: str, stamp: str) -> dict[str, Any]:
    return {"id": upstream_id, "properties": {"email": "a@b.co", "lastmodifieddate": stamp}, "updatedAt": stamp}


def test_hubspot_list_backfill_then_search_then_archived() -> None:
    hs = HubSpotCapture()
    target = Target("contact", {}, "")
    cursor = hs.start(NOW)
    call = hs.request(cursor, target)
    assert (call.method, call.path, call.query) == ("GET", "/crm/v3/objects/contacts", [("limit", "100")])
    page = hs.page(cursor, {"results": [hs_row("1", "2026-01-01T00:00:00.000Z")], "paging": {"next": {"after": "2"}}})
    assert page.cursor["after"] == "2" and page.backfilled == 1
    done = hs.page(page.cursor, {"results": []})
    assert done.cursor["phase"] == "live" and done.cursor["since"] == cursor["since"]
    search = hs.request(done.cursor, target)
    assert search.path == "/crm/v3/objects/contacts/search" and search.method == "POST"
    assert search.json["filterGroups"][0]["filters"][0] == {
        "propertyName": "lastmodifieddate",  # contacts have no hs_lastmodifieddate
        "operator": "GT",
        "value": str(cursor["since"] - 1),
    }
    assert search.json["sorts"] == [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
    for obj in ("company", "deal", "2-123456"):
        other = hs.request(done.cursor, Target(obj, {}, "")).json
        assert other["sorts"] == [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]
    found = hs.page(done.cursor, {"results": [hs_row("7", "2026-01-03T00:00:00.000Z")]})
    assert [s.upstream_id for s in found.seen] == ["7"] and found.cursor["step"] == "archived"
    archived = hs.request(found.cursor, target)
    assert ("archived", "true") in (archived.query or [])
    gone = hs.page(found.cursor, {"results": [hs_row("3", "2026-01-03T00:00:00.000Z")]})
    assert gone.seen[0].data is None and gone.caught_up and gone.cursor["step"] == "search"
    # the instant is read again: the record already read there is skipped
    again = hs.page(gone.cursor, {"results": [hs_row("7", "2026-01-03T00:00:00.000Z")]})
    assert again.seen == []


def stripe_event(event_id: str, kind: str, customer_id: str) -> dict[str, Any]:
    return {"id": event_id, "type": kind, "data": {"object": {"id": customer_id, "object": "customer"}}}


def test_stripe_anchor_list_then_events_oldest_first() -> None:
    st = StripeCapture()
    target = Target("customer", {}, "")
    cursor = st.start(NOW)
    anchor_call = st.request(cursor, target)
    assert anchor_call.path == "/v1/events" and ("types[]", "customer.deleted") in (anchor_call.query or [])
    anchored = st.page(cursor, {"object": "list", "data": [stripe_event("evt_1", "customer.created", "cus_1")]})
    assert anchored.cursor["event"] == "evt_1" and anchored.seen == []
    listing = st.request(anchored.cursor, target)
    assert listing.path == "/v1/customers"
    page = st.page(anchored.cursor, {"data": [{"id": "cus_2"}, {"id": "cus_1"}], "has_more": True})
    assert page.cursor["after"] == "cus_1"
    assert ("starting_after", "cus_1") in (st.request(page.cursor, target).query or [])
    live = st.page(page.cursor, {"data": [], "has_more": False}).cursor
    assert live == {"phase": "live", "event": "evt_1"}
    assert ("ending_before", "evt_1") in (st.request(live, target).query or [])
    events = {
        "data": [
            stripe_event("evt_3", "customer.deleted", "cus_2"),
            stripe_event("evt_2", "customer.updated", "cus_2"),
        ],
        "has_more": False,
    }
    polled = st.page(live, events)
    assert [(s.upstream_id, s.data is None) for s in polled.seen] == [("cus_2", False), ("cus_2", True)]
    assert polled.cursor["event"] == "evt_3" and polled.caught_up


def test_stripe_without_anchor_relists_when_events_overflow_a_page() -> None:
    st = StripeCapture()
    cursor = {"phase": "live", "event": None}
    page = st.page(cursor, {"data": [stripe_event("evt_9", "customer.created", "cus_9")], "has_more": True})
    assert page.cursor == {"phase": "backfill", "anchored": True, "event": "evt_9", "after": None}


def test_stripe_event_types_are_the_ones_stripe_emits() -> None:
    """Most objects: created/updated/deleted; the exceptions are named as Stripe names them."""
    assert event_types("customer") == ("customer.created", "customer.updated", "customer.deleted")
    subscription = ("customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted")
    assert event_types("subscription")[:3] == subscription
    assert "charge.created" not in event_types("charge") and "charge.refunded" in event_types("charge")
    assert "payment_intent.updated" not in event_types("payment_intent")
    assert "invoice.upcoming" not in event_types("invoice") and "invoice.paid" in event_types("invoice")
    assert all(len(event_types(obj)) <= 20 for obj in ("subscription", "invoice", "charge", "payment_intent"))


def test_stripe_relists_when_its_anchor_event_aged_out() -> None:
    """Only a live cursor's missing event restarts the backfill; other refusals stay errors."""
    st = StripeCapture()
    missing = {"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "ending_before"}}
    assert st.recover({"phase": "live", "event": "evt_1"}, 400, missing) == st.start(NOW)
    assert st.recover({"phase": "live", "event": None}, 400, missing) is None
    assert st.recover({"phase": "live", "event": "evt_1"}, 400, {"error": {"code": "parameter_invalid"}}) is None


def test_stripe_backfill_goes_on_from_a_deleted_cursors_second() -> None:
    """The list is newest first by ``created`` (seconds), one second's objects may span pages: a deleted
    ``starting_after`` is replaced by ``created[lte]=<its second>``, less the ids already read at it."""
    st = StripeCapture()
    target = Target("customer", {}, "")
    cursor = {"phase": "backfill", "anchored": True, "event": "evt_1", "after": None}
    first = [{"id": "cus_5", "created": 20}, {"id": "cus_4", "created": 10}, {"id": "cus_3", "created": 10}]
    page = st.page(cursor, {"data": first, "has_more": True})
    assert (page.cursor["after"], page.cursor["at"], page.cursor["ids"]) == ("cus_3", 10, ["cus_3", "cus_4"])
    missing = {"error": {"type": "invalid_request_error", "code": "resource_missing", "param": "starting_after"}}
    again = st.recover(page.cursor, 400, missing)
    assert again is not None and st.request(again, target).query == [("limit", "100"), ("created[lte]", "10")]
    rest = [{"id": "cus_4", "created": 10}, {"id": "cus_2", "created": 10}, {"id": "cus_1", "created": 9}]
    tail = st.page(again, {"data": rest, "has_more": False})  # cus_3 is gone
    assert [s.upstream_id for s in tail.seen] == ["cus_2", "cus_1"] and tail.backfilled == 2
    unknown = {"error": {"type": "invalid_request_error", "code": "parameter_unknown", "param": "created"}}
    assert st.recover(again, 400, unknown) == {**again, "lte": None, "at": None, "ids": []}  # from the newest
    bare = st.page(cursor, {"data": [{"id": "cus_9"}], "has_more": True})  # no created to page from
    relist = st.recover(bare.cursor, 400, missing)
    assert bare.cursor["at"] is None and relist is not None
    assert st.request(relist, target).query == [("limit", "100")]  # from the newest, as before
    crowd = {**page.cursor, "ids": [f"cus_{i:05d}" for i in range(MAX_TIES)]}  # a bulk import
    more = st.page(crowd, {"data": [{"id": "cus_x", "created": 10}], "has_more": True})
    assert len(more.cursor["ids"]) == MAX_TIES  # bounded: any fewer only reads some again


def test_airtable_scan_pages_and_restarts_an_expired_offset() -> None:
    at = AirtableCapture()
    target = Target("Contacts", {"base_id": "appSandboxBase001"}, "")
    cursor = at.start(NOW)
    assert at.request(cursor, target).query == [("pageSize", "100")]
    page = at.page(cursor, {"records": [{"id": "rec1", "fields": {"Name": "A"}}], "offset": "itr/rec2"})
    assert page.cursor["offset"] == "itr/rec2" and not page.scan_complete
    end = at.page(page.cursor, {"records": []})
    assert end.scan_complete and end.caught_up and end.cursor == {"phase": "live", "offset": None}
    expired = {"error": {"type": "LIST_RECORDS_ITERATOR_NOT_AVAILABLE"}}
    assert at.recover(page.cursor, 422, expired) == {"phase": "backfill", "offset": None}
    assert at.recover(page.cursor, 500, expired) is None
    with pytest.raises(CaptureError):
        at.page(cursor, {"records": [{"id": "rec1", "fields": []}]})


def test_rest_has_no_capture() -> None:
    assert capture("rest") is None and capture("stripe") is not None
