"""Salesforce REST API stand-in: sObject rows, sObject Collections and the OAuth2 refresh flow.

Mirrors what the translator and the docs use: 18-character ids with the type's key prefix and the
case-checksum suffix, ``CreatedDate``/``LastModifiedDate``/``SystemModstamp``, field validation
with Salesforce's error codes, collections of at most 200 records with ``allOrNone`` (validate
everything first, then apply all or only the valid ones), ``Sforce-Limit-Info`` on every answer,
403 ``REQUEST_LIMIT_EXCEEDED`` when over the limit, and 401 ``INVALID_SESSION_ID`` for a bad token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.sandbox.common import (
    BASE62,
    Flavor,
    Knobs,
    Reject,
    SandboxState,
    is_email,
    now,
    utc_iso,
)
from gateway.sandbox.salesforce.oauth import OAuthClient, valid_session

MAX_COLLECTION = 200
# Sandbox credentials, not secrets: what the demo and the tests present.
DEFAULT_TOKEN = "00DSANDBOX!sandbox-access-token"
DEFAULT_CLIENT_ID = "sandbox-client-id"
DEFAULT_CLIENT_SECRET = "sandbox-client-secret"
DEFAULT_REFRESH_TOKEN = "sandbox-refresh-token"
SYSTEM_FIELDS = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")
_CHECKSUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was using AllOrNone header",
    "fields": [],
}


@dataclass(frozen=True)
class SObject:
    prefix: str
    fields: dict[str, str]  # name -> "string" | "email" | "reference"
    required: tuple[str, ...]


SOBJECTS = {
    "Contact": SObject(
        "003",
        {
            "FirstName": "string",
            "LastName": "string",
            "Email": "email",
            "Phone": "string",
            "Title": "string",
            "AccountId": "reference",
            "Description": "string",
        },
        ("LastName",),
    ),
    "Account": SObject(
        "001",
        {"Name": "string", "Industry": "string", "Phone": "string", "Website": "string", "Description": "string"},
        ("Name",),
    ),
    "Lead": SObject(
        "00Q",
        {"FirstName": "string", "LastName": "string", "Company": "string", "Email": "email", "Status": "string"},
        ("LastName", "Company"),
    ),
}


def _full_name(row: dict[str, Any]) -> str | None:
    return " ".join(part for part in (row.get("FirstName"), row.get("LastName")) if part) or None


# Fields Salesforce computes: reads return them, writes refuse them (compound fields are read-only; a
# contact's or lead's Name joins its name parts; the address compound is null while its parts are).
COMPUTED: dict[str, dict[str, Callable[[dict[str, Any]], Any]]] = {
    "Contact": {"Name": _full_name, "MailingAddress": lambda row: None},
    "Lead": {"Name": _full_name},
}
_BY_NAME = {name.lower(): name for name in SOBJECTS}
_BY_PREFIX = {s.prefix: name for name, s in SOBJECTS.items()}


def salesforce_id(prefix: str, serial: int) -> str:
    """15-character id (prefix, pod, serial in base 62) plus the 3-character case checksum."""
    digits = ""
    for _ in range(9):
        serial, rem = divmod(serial, 62)
        digits = BASE62[rem] + digits
    return id_18(prefix + "Dn0" + digits)


def is_salesforce_id(value: str) -> bool:
    return len(value) in (15, 18) and value.isalnum()


def sf_error(status: int, code: str, message: str, fields: list[str] | None = None) -> web.Response:
    """Salesforce's top-level error body: a JSON list of ``{message, errorCode[, fields]}``."""
    body: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        body["fields"] = fields
    return web.json_response([body], status=status)


class SalesforceFlavor(Flavor):
    name = "salesforce"
    sends_retry_after = False  # 403 REQUEST_LIMIT_EXCEEDED: the 24-hour allocation, no Retry-After
    public_prefixes = ("/services/oauth2/",)

    def authenticate(self, request: web.Request, state: SandboxState) -> bool:
        assert isinstance(state, SalesforceState)
        return valid_session(request, state.oauth)

    def unauthorized(self) -> web.Response:
        return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")

    def throttled(self, retry_after: float, *, daily: bool) -> web.Response:
        return sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")

    def server_error(self, status: int) -> web.Response:
        return sf_error(status, "UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId.")

    def route_missing(self, request: web.Request) -> web.Response:
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist")

    def limit_headers(self, state: SandboxState, key: str) -> dict[str, str]:
        limit = state.knobs.daily_limit or 15000
        return {"Sforce-Limit-Info": f"api-usage={state.daily_used}/{limit}"}


class SalesforceState(SandboxState):
    """The org: rows per sObject type, deleted ids (for ENTITY_IS_DELETED) and the OAuth client."""

    def __init__(self, *, oauth: OAuthClient, knobs: Knobs) -> None:
        super().__init__(SalesforceFlavor(), knobs=knobs)
        self.oauth = oauth
        self.deleted: dict[str, tuple[str, dict[str, Any]]] = {}  # the recycle bin: id -> (sObject, row)
        self.serial = 0
        self.query_batches: dict[str, tuple[str, list[dict[str, Any]]]] = {}  # locator -> (version, rows left)

    def reset(self) -> None:
        super().reset()
        self.deleted.clear()
        self.query_batches.clear()
        self.oauth.issued.clear()

    # --- the store, also used by seeding and tests ---

    def insert(self, sobject: str, fields: dict[str, Any]) -> dict[str, Any]:
        self.serial += 1
        stamp = utc_iso(now(), offset="+0000")
        row = {"Id": salesforce_id(SOBJECTS[sobject].prefix, 1_000_000 + self.serial), **fields}
        row.update(IsDeleted=False, CreatedDate=stamp, LastModifiedDate=stamp, SystemModstamp=stamp)
        self.table(sobject)[row["Id"]] = row
        return row

    def update(self, sobject: str, record_id: str, fields: dict[str, Any]) -> None:
        stamp = utc_iso(now(), offset="+0000")
        self.table(sobject)[record_id].update(fields, LastModifiedDate=stamp, SystemModstamp=stamp)

    def delete(self, sobject: str, record_id: str) -> None:
        """Into the recycle bin, where ``queryAll`` still shows it with ``IsDeleted = true``."""
        row = self.table(sobject).pop(record_id)
        self.deleted[record_id] = (
            sobject,
            {**row, "IsDeleted": True, "SystemModstamp": utc_iso(now(), offset="+0000")},
        )

    def change(self, obj: str, action: str, record_id: str | None, data: dict[str, Any]) -> dict[str, Any] | None:
        """A change made "from outside" the gateway (the ``/_sandbox/records`` admin route)."""
        sobject = _BY_NAME.get(obj.lower())
        if sobject is None:
            raise KeyError(obj)
        if action == "create":
            return self.insert(sobject, data)
        located = self.locate(record_id or "")
        if located is None or located[0] != sobject:
            raise KeyError(record_id)
        if action == "update":
            self.update(sobject, located[1]["Id"], data)
            return located[1]
        self.delete(sobject, located[1]["Id"])
        return None

    def locate(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        sobject = _BY_PREFIX.get(record_id[:3])
        row = self.table(sobject).get(id_18(record_id)) if sobject else None
        return (sobject, row) if sobject and row else None

    def missing_error(self, record_id: str) -> dict[str, Any]:
        if not is_salesforce_id(record_id):
            return {"statusCode": "MALFORMED_ID", "message": f"malformed id {record_id}", "fields": []}
        if id_18(record_id) in self.deleted:
            return {"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}
        return {"statusCode": "INVALID_CROSS_REFERENCE_KEY", "message": "invalid cross reference id", "fields": []}


def id_18(record_id: str) -> str:
    """The 18-character form of a 15- or 18-character id: each suffix letter encodes 5 letters' case."""
    base = record_id[:15]
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << i for i, ch in enumerate(base[chunk * 5 : chunk * 5 + 5]) if ch.isupper())
        suffix += _CHECKSUM[bits]
    return base + suffix


def sobject_name(raw: str) -> str:
    name = _BY_NAME.get(raw.lower())
    if name is None:
        raise Reject(sf_error(404, "NOT_FOUND", f"The requested resource does not exist: sObject type '{raw}'"))
    return name


def check_fields(sobject: str, fields: dict[str, Any]) -> None:
    """Unknown or read-only fields fail the whole request, as Salesforce's deserializer does."""
    schema = SOBJECTS[sobject].fields
    read_only = [f for f in fields if f in SYSTEM_FIELDS or f in COMPUTED.get(sobject, {})]
    if read_only:
        raise Reject(
            sf_error(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(read_only)}. Please check the security "
                "settings of this field and verify that it is read/write for your profile or "
                "permission set.",
                read_only,
            )
        )
    for name in fields:
        if name not in schema:
            raise Reject(sf_error(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}"))


def validate(state: SalesforceState, sobject: str, fields: dict[str, Any], *, creating: bool) -> list[dict[str, Any]]:
    """Per-record errors (``statusCode``/``message``/``fields``), empty when the record is valid."""
    if state.take_validation_error():
        return [
            {
                "statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "message": "Sandbox: injected validation error",
                "fields": [],
            }
        ]
    spec = SOBJECTS[sobject]
    errors = []
    missing = [f for f in spec.required if (creating and not fields.get(f)) or (f in fields and not fields[f])]
    if missing:
        errors.append(
            {
                "statusCode": "REQUIRED_FIELD_MISSING",
                "message": f"Required fields are missing: [{', '.join(missing)}]",
                "fields": missing,
            }
        )
    for name, kind in spec.fields.items():
        value = fields.get(name)
        if kind == "email" and value not in (None, "") and not is_email(value):
            errors.append(
                {
                    "statusCode": "INVALID_EMAIL_ADDRESS",
                    "message": f"{name}: invalid email address: {value}",
                    "fields": [name],
                }
            )
        if kind == "reference" and value not in (None, "") and (not isinstance(value, str) or not state.locate(value)):
            errors.append(
                {
                    "statusCode": "INVALID_CROSS_REFERENCE_KEY",
                    "message": f"{name}: id value of incorrect type: {value}",
                    "fields": [name],
                }
            )
    return errors


def row_view(sobject: str, row: dict[str, Any], version: str, fields: list[str] | None = None) -> dict[str, Any]:
    """A row as the API returns it: ``attributes``, then every field (null when unset)."""
    computed = COMPUTED.get(sobject, {})
    names = fields if fields is not None else [*SOBJECTS[sobject].fields, *computed, *SYSTEM_FIELDS]
    view: dict[str, Any] = {
        "attributes": {"type": sobject, "url": f"/services/data/{version}/sobjects/{sobject}/{row['Id']}"}
    }
    view.update({name: computed[name](row) if name in computed else row.get(name) for name in names})
    view["Id"] = row["Id"]
    return view


def field_list(query: Mapping[str, str], sobject: str) -> list[str] | None:
    raw = query.get("fields")
    if raw is None:
        return None
    names = [f.strip() for f in raw.split(",") if f.strip()]
    known = {*SOBJECTS[sobject].fields, *COMPUTED.get(sobject, {}), *SYSTEM_FIELDS}
    for name in names:
        if name not in known:
            raise Reject(sf_error(400, "INVALID_FIELD", f"No such column '{name}' on entity '{sobject}'"))
    return names


def seed(state: SalesforceState) -> None:
    """A few demo rows: one account and three contacts."""
    account = state.insert("Account", {"Name": "Acme Corporation", "Industry": "Manufacturing"})
    for first, last in (("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing")):
        state.insert(
            "Contact",
            {"FirstName": first, "LastName": last, "AccountId": account["Id"], "Email": f"{first.lower()}@example.com"},
        )


SALESFORCE = web.AppKey("salesforce_sandbox", SalesforceState)
