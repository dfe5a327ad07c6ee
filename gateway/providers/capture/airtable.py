"""Airtable change capture: full scans, ``GET /v0/{base}/{table}?pageSize=100&offset=``.

Airtable has no change feed and no modification time on records, so every poll scans the table
and the runner compares each record's fields with the stream's last known state; a known record
that a complete scan did not show was deleted. An expired ``offset`` (422
``LIST_RECORDS_ITERATOR_NOT_AVAILABLE``) starts the scan over.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from gateway.providers.base import Call, Target, option
from gateway.providers.capture.base import Capture, CaptureError, Cursor, Page, Seen, rows, text

PAGE_SIZE = 100


class AirtableCapture(Capture):
    def start(self, now: datetime) -> Cursor:
        return {"phase": "backfill", "offset": None}

    def request(self, cursor: Cursor, target: Target) -> Call:
        base_id = option(target, "base_id")
        offset = [("offset", str(cursor["offset"]))] if cursor.get("offset") else []
        return Call("GET", f"/v0/{base_id}/{quote(target.obj, safe='')}", query=[("pageSize", str(PAGE_SIZE)), *offset])

    def page(self, cursor: Cursor, body: Any) -> Page:
        seen = []
        for record in rows(body, "records"):
            fields = record.get("fields", {})
            if not isinstance(fields, dict):
                raise CaptureError("a record has no 'fields' object")
            seen.append(Seen(text(record, "id"), dict(fields)))
        backfilled = len(seen) if cursor.get("phase") == "backfill" else 0
        offset = body.get("offset")
        if offset is not None:
            if not isinstance(offset, str) or not offset:
                raise CaptureError("the answer has a malformed 'offset'")
            return Page(seen, {**cursor, "offset": offset}, backfilled=backfilled)
        done = {"phase": "live", "offset": None}
        return Page(seen, done, caught_up=True, scan_complete=True, backfilled=backfilled)

    def scan_start(self, cursor: Cursor) -> bool:
        return not cursor.get("offset")

    def recover(self, cursor: Cursor, status: int, body: Any) -> Cursor | None:
        error = body.get("error") if isinstance(body, dict) else None
        kind = error.get("type") if isinstance(error, dict) else error
        if status == 422 and kind == "LIST_RECORDS_ITERATOR_NOT_AVAILABLE" and cursor.get("offset"):
            return {**cursor, "offset": None}
        return None
