"""Stripe change capture: the object's list endpoint (backfill), then ``/v1/events`` (changes).

Stripe lists newest first and ``created`` has one-second resolution, so the cursor is an event id:
before the backfill the newest event of the object (``event_types``) is noted (the anchor), the
backfill pages the list endpoint with ``starting_after``, then polling asks
``/v1/events?types[]=...&ending_before=<anchor>``, which answers the events just newer than the
anchor; they are applied oldest first and the newest becomes the anchor. A backfill whose
``starting_after`` object was deleted between two pages goes on from that object's second: the list is
ordered by ``created``, so ``created[lte]=<its created>`` less the ids already read at that second
(the cursor keeps them, ``at`` and ``ids``) is exactly what was left to read, whatever order Stripe
gives records of one second; objects created since the backfill began come from the events anyway. An
endpoint that takes no ``created`` filter, or a cursor without ``at``, lists again from the newest.
With no anchor yet (no event in Stripe's 30-day window when the backfill began) a poll that finds
more than one page of events re-reads the list instead; so does a poll whose anchor aged out of that
window (no new event for 30 days: Stripe refuses the cursor with ``resource_missing``). A re-read list
shows changes, not deletes: the list omits deleted objects.
``upstream_updated_at`` stays empty: Stripe objects carry no modification time (mutations agree).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.providers.base import Call, Target
from gateway.providers.capture.base import Capture, CaptureError, Cursor, Page, Seen, Ties, rows, text
from gateway.providers.stripe import resource

LIMIT = 100
# Ids of one second the cursor keeps: skipping fewer than were read only reads some again after a deleted
# cursor (no event); a bulk import's thousands in one second would otherwise ride along with every page.
MAX_TIES = 1000
ACTIONS = ("created", "updated", "deleted")
# Objects whose changes Stripe reports otherwise (https://docs.stripe.com/api/events/types), as
# (event prefix, space-separated actions): a subscription's events are ``customer.subscription.*``; the intents,
# charges and payouts have no ``.created`` or no ``.updated`` that covers every change, their state
# changes have events of their own. ``invoice.upcoming`` is left out: its invoice has no id yet.
_EVENTS: dict[str, tuple[str, str]] = {
    "subscription": (
        "customer.subscription",
        "created updated deleted paused resumed pending_update_applied pending_update_expired",
    ),
    "tax_id": ("customer.tax_id", "created updated deleted"),
    "payment_intent": (
        "payment_intent",
        "created amount_capturable_updated canceled partially_funded payment_failed processing requires_action "
        "succeeded",
    ),
    "setup_intent": ("setup_intent", "created canceled requires_action setup_failed succeeded"),
    "charge": ("charge", "succeeded failed pending captured expired refunded updated"),
    "payout": ("payout", "created updated paid failed canceled reconciliation_completed"),
    "invoice": (
        "invoice",
        "created updated deleted finalized finalization_failed paid payment_action_required payment_failed "
        "payment_succeeded sent marked_uncollectible voided",
    ),
}


def event_types(obj: str) -> tuple[str, ...]:
    """The event types that report changes of ``obj`` (``customer`` -> ``customer.created``, ...)."""
    prefix, actions = _EVENTS.get(obj, (obj, " ".join(ACTIONS)))
    return tuple(f"{prefix}.{action}" for action in actions.split())


def _types(obj: str) -> list[tuple[str, str]]:
    return [("types[]", kind) for kind in event_types(obj)]


def _event_seen(event: dict[str, Any]) -> Seen:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    kind = event.get("type")
    if not isinstance(obj, dict) or not isinstance(kind, str):
        raise CaptureError("an event has no 'type' or 'data.object'")
    upstream_id = text(obj, "id")
    return Seen(upstream_id, None if kind.endswith(".deleted") else dict(obj))


class StripeCapture(Capture):
    def start(self, now: datetime) -> Cursor:
        return {"phase": "backfill", "anchored": False, "event": None, "after": None}

    def request(self, cursor: Cursor, target: Target) -> Call:
        obj = target.obj
        if cursor.get("phase") == "backfill" and not cursor.get("anchored"):
            return Call("GET", "/v1/events", query=[("limit", "1"), *_types(obj)])
        if cursor.get("phase") == "backfill":
            after = [("starting_after", str(cursor["after"]))] if cursor.get("after") else []
            lte = [("created[lte]", str(cursor["lte"]))] if cursor.get("lte") is not None else []
            return Call("GET", f"/v1/{resource(obj)}", query=[("limit", str(LIMIT)), *after, *lte])
        before = [("ending_before", str(cursor["event"]))] if cursor.get("event") else []
        return Call("GET", "/v1/events", query=[("limit", str(LIMIT)), *_types(obj), *before])

    def page(self, cursor: Cursor, body: Any) -> Page:
        data = rows(body, "data")
        more = body.get("has_more") is True
        if cursor.get("phase") == "backfill" and not cursor.get("anchored"):
            return Page([], {**cursor, "anchored": True, "event": text(data[0], "id") if data else None})
        if cursor.get("phase") == "backfill":
            ties = Ties(cursor.get("at"), set(cursor.get("ids") or []))
            fresh = [o for o in data if ties.fresh(o.get("created"), text(o, "id"))]
            seen = [Seen(text(o, "id"), dict(o)) for o in fresh if not o.get("deleted")]
            ties = _read_to(ties, data)
            if more and data:
                after = {"after": text(data[-1], "id"), "at": ties.since, "ids": sorted(ties.ids)[:MAX_TIES]}
                return Page(seen, {**cursor, **after}, backfilled=len(seen))
            live = {"phase": "live", "event": cursor.get("event")}
            return Page(seen, live, backfilled=len(seen))
        if cursor.get("event") is None and more:  # events older than this page are out of reach: re-list
            return Page([], {"phase": "backfill", "anchored": True, "event": text(data[0], "id"), "after": None})
        seen = [_event_seen(event) for event in reversed(data)]
        newest = text(data[0], "id") if data else cursor.get("event")
        return Page(seen, {**cursor, "event": newest}, caught_up=not more)

    def recover(self, cursor: Cursor, status: int, body: Any) -> Cursor | None:
        """A cursor Stripe no longer knows (resource_missing). The anchor event is gone (older than 30
        days): note the newest event again and re-list. The backfill's ``starting_after`` object was
        deleted (while the sync was paused, failing, or its replica killed between two pages): go on
        from its second (``created[lte]``), or from the newest, keeping the anchor, if there is none to
        go on from or the list refuses ``created`` (parameter_unknown); records read again make no
        second event."""
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        phase = cursor.get("phase")
        if status not in (400, 404):
            return None
        if code == "resource_missing" and phase == "live" and cursor.get("event"):
            return self.start(datetime.now(UTC))
        if code == "resource_missing" and phase == "backfill" and cursor.get("after"):
            return {**cursor, "after": None, "lte": cursor.get("at")}
        if code == "parameter_unknown" and phase == "backfill" and cursor.get("lte") is not None:
            return {**cursor, "lte": None, "at": None, "ids": []}
        return None


def _read_to(ties: Ties, data: list[dict[str, Any]]) -> Ties:
    """The second of the page's last object and the ids read at it; none to page from when an object
    has no ``created`` (unix seconds)."""
    for row in data:
        created = row.get("created")
        if not isinstance(created, int) or isinstance(created, bool):
            return Ties(None)
        ties.advance(created, text(row, "id"))
    return ties
