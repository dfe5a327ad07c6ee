"""Airtable Web API stand-in: ``/v0/{baseId}/{table}`` records, 10 per write, 5 requests/s per base.

Records are ``{id: "rec" + 14, createdTime, fields}`` with empty fields left out, as Airtable does.
Field values are checked against the table's field types (``typecast`` converts strings where
Airtable would); bad input is a 422 with ``{"error": {"type", "message"}}``. Over 5 requests per
second on one base, every request to that base gets 429 for the penalty (30 s by default; the
``penalty`` knob shrinks it for tests).
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from gateway.sandbox.common import Flavor, Knobs, Reject, SandboxState, is_email, now, random_id, utc_iso

MAX_WRITE = 10
DEFAULT_TOKEN = "patSandbox.0123456789abcdef"  # a sandbox credential, not a secret
DEFAULT_BASE = "appSandboxBase001"
DEFAULT_TABLES = {
    "Contacts": {
        "Name": "singleLineText",
        "Email": "email",
        "Phone": "phoneNumber",
        "Notes": "multilineText",
        "Age": "number",
        "Subscribed": "checkbox",
    },
    "Companies": {"Name": "singleLineText", "Website": "url", "Employees": "number"},
}
_TEXT = frozenset({"singleLineText", "multilineText", "phoneNumber", "url", "email"})


def at_error(status: int, kind: str, message: str) -> web.Response:
    """Airtable's error body: ``{"error": {"type": ..., "message": ...}}``."""
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


class AirtableFlavor(Flavor):
    name = "airtable"
    sends_retry_after = False  # https://airtable.com/developers/web/api/rate-limits: wait 30 s, no header says so

    def __init__(self, token: str) -> None:
        self._token = token

    def authenticate(self, request: web.Request, state: SandboxState) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Bearer" and hmac.compare_digest(token.encode(), self._token.encode())

    def unauthorized(self) -> web.Response:
        return at_error(401, "AUTHENTICATION_REQUIRED", "Authentication required")

    def throttled(self, retry_after: float, *, daily: bool) -> web.Response:
        body = {"errors": [{"error": "RATE_LIMIT_REACHED", "message": "Rate limit exceeded. Please try again later"}]}
        return web.json_response(body, status=429)

    def server_error(self, status: int) -> web.Response:
        return at_error(status, "SERVER_ERROR", "Try again. If the problem persists, contact support.")

    def limit_key(self, request: web.Request) -> str:
        """Airtable's limit is per base: ``/v0/{baseId}/...``."""
        parts = request.path.split("/")
        return parts[2] if len(parts) > 2 else "none"


class AirtableState(SandboxState):
    """Bases -> tables (field name -> type) and their records."""

    def __init__(self, *, token: str, bases: dict[str, dict[str, dict[str, str]]], knobs: Knobs) -> None:
        super().__init__(AirtableFlavor(token), knobs=knobs)
        self.schema = bases
        self.table_ids = {(b, name): "tbl" + random_id("", 14) for b, tables in bases.items() for name in tables}

    def resolve(self, base_id: str, table: str) -> tuple[str, dict[str, str]]:
        """``(table name, fields)`` for a table named or given by id; Airtable's 403/404 otherwise."""
        tables = self.schema.get(base_id)
        if tables is not None:
            for name, fields in tables.items():
                if table in (name, self.table_ids[(base_id, name)]):
                    return name, fields
        raise Reject(
            at_error(
                403 if tables is None else 404,
                "INVALID_PERMISSIONS_OR_MODEL_NOT_FOUND" if tables is None else "TABLE_NOT_FOUND",
                "Invalid permissions, or the requested model was not found. Check that both your "
                "user and your token have the required permissions, and that the model names "
                "and/or ids are correct.",
            )
        )

    def records(self, base_id: str, table: str) -> dict[str, dict[str, Any]]:
        return self.table(f"{base_id}/{table}")

    def insert(self, base_id: str, table: str, fields: dict[str, Any]) -> dict[str, Any]:
        record_id = random_id("rec", 14)
        record = {"id": record_id, "createdTime": utc_iso(now()), "fields": fields}
        self.records(base_id, table)[record_id] = record
        return record

    def change(self, obj: str, action: str, record_id: str | None, data: dict[str, Any]) -> dict[str, Any] | None:
        """A change made "from outside" the gateway (``/_sandbox/records``); ``obj`` is ``[base/]table``."""
        base_id, _, table = obj.rpartition("/")
        base_id = base_id or next(iter(self.schema))
        if table not in self.schema.get(base_id, {}):
            raise KeyError(obj)
        if action == "create":
            return self.insert(base_id, table, data)
        records = self.records(base_id, table)
        if record_id not in records:
            raise KeyError(record_id)
        if action == "update":
            records[record_id]["fields"].update(data)
            return records[record_id]
        del records[record_id]
        return None


def convert(state: AirtableState, schema: dict[str, str], fields: Any, *, typecast: bool) -> dict[str, Any]:
    """Check (and with ``typecast`` coerce) each value against its column; 422 on the first bad one."""
    if not isinstance(fields, dict):
        raise Reject(at_error(422, "INVALID_REQUEST_MISSING_FIELDS", 'Could not find field "fields" in the request'))
    if state.take_validation_error():
        raise Reject(at_error(422, "INVALID_VALUE_FOR_COLUMN", "Sandbox: injected validation error"))
    out: dict[str, Any] = {}
    for name, value in fields.items():
        kind = schema.get(name)
        if kind is None:
            raise Reject(at_error(422, "UNKNOWN_FIELD_NAME", f'Unknown field name: "{name}"'))
        out[name] = _cell(name, kind, value, typecast=typecast)
    return out


def _cell(name: str, kind: str, value: Any, *, typecast: bool) -> Any:
    if value is None:
        return None
    bad = Reject(at_error(422, "INVALID_VALUE_FOR_COLUMN", f'Field "{name}" cannot accept the provided value'))
    if kind == "number":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if typecast and isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise bad from None
            return int(number) if number.is_integer() else number
        raise bad
    if kind == "checkbox":
        if isinstance(value, bool):
            return value
        if typecast and isinstance(value, str) and value.lower() in ("true", "false", ""):
            return value.lower() == "true"
        raise bad
    if not isinstance(value, str):
        if not typecast or isinstance(value, (dict, list)):
            raise bad
        value = str(value)
    if kind == "email" and value and not is_email(value):
        raise bad
    return value


def view(record: dict[str, Any]) -> dict[str, Any]:
    """Airtable leaves empty cells out of ``fields``."""
    fields = {k: v for k, v in record["fields"].items() if v not in (None, "", False, [])}
    return {"id": record["id"], "createdTime": record["createdTime"], "fields": fields}


def seed(state: AirtableState, base_id: str = DEFAULT_BASE) -> None:
    """A few demo contacts in the default base."""
    for first, last in (("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing")):
        state.insert(base_id, "Contacts", {"Name": f"{first} {last}", "Email": f"{first.lower()}@example.com"})


AIRTABLE = web.AppKey("airtable_sandbox", AirtableState)
