"""HubSpot CRM v3 objects stand-in: contacts, companies and deals, single and batch endpoints.

Objects look like HubSpot's (``{id, properties, createdAt, updatedAt, archived}``, numeric string
ids, every property value a string), batches take at most 100 inputs, validation errors use
HubSpot's body (``status: "error"``, ``category: "VALIDATION_ERROR"``, ``errors``), and every answer
carries the ``X-HubSpot-RateLimit-*`` headers; over the limit the answer is 429 ``RATE_LIMITS``.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from gateway.sandbox.common import Flavor, Knobs, Reject, SandboxState, is_email, now, utc_iso

MAX_BATCH = 100
_TYPE_IDS = {"0-1": "contacts", "0-2": "companies", "0-3": "deals"}
DEFAULT_TOKEN = "pat-na1-sandbox-token"  # a sandbox credential, not a secret
PROPERTIES = {
    "contacts": ("email", "firstname", "lastname", "phone", "company", "website", "jobtitle", "lifecyclestage"),
    "companies": ("name", "domain", "industry", "phone", "city", "country", "numberofemployees"),
    "deals": ("dealname", "amount", "dealstage", "pipeline", "closedate", "hubspot_owner_id"),
}
# What a GET returns when the caller names no ``properties`` (as HubSpot's defaults do).
DEFAULT_PROPERTIES = {
    "contacts": ("email", "firstname", "lastname"),
    "companies": ("name", "domain"),
    "deals": ("dealname", "amount", "dealstage", "pipeline", "closedate"),
}
# The last-modified property: contacts call it ``lastmodifieddate``, the other types ``hs_lastmodifieddate``
# (https://developers.hubspot.com/docs/api/crm/search, "default returned properties").
MODIFIED = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate", "deals": "hs_lastmodifieddate"}
NUMERIC = frozenset({"amount", "numberofemployees"})


def hs_error(status: int, category: str, message: str, **extra: Any) -> web.Response:
    """HubSpot's error body: ``{status: "error", message, correlationId, category, ...}``."""
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category, **extra}
    return web.json_response(body, status=status)


class HubSpotFlavor(Flavor):
    name = "hubspot"

    def __init__(self, token: str) -> None:
        self._token = token

    def authenticate(self, request: web.Request, state: SandboxState) -> bool:
        return request.headers.get("Authorization", "") == f"Bearer {self._token}"

    def unauthorized(self) -> web.Response:
        return hs_error(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports "
            "OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/"
            "docs/methods/auth/oauth-overview",
        )

    def throttled(self, retry_after: float, *, daily: bool) -> web.Response:
        policy = "DAILY" if daily else "TEN_SECONDLY_ROLLING"
        limit = "daily" if daily else "ten_secondly_rolling"
        return hs_error(
            429, "RATE_LIMITS", f"You have reached your {limit} limit.", errorType="RATE_LIMIT", policyName=policy
        )

    def server_error(self, status: int) -> web.Response:
        return hs_error(status, "INTERNAL_ERROR", "internal error")

    def route_missing(self, request: web.Request) -> web.Response:
        return hs_error(404, "OBJECT_NOT_FOUND", "resource not found")

    def limit_headers(self, state: SandboxState, key: str) -> dict[str, str]:
        knobs = state.knobs
        headers = {"X-HubSpot-Correlation-Id": str(uuid.uuid4())}
        if knobs.rate_limit is not None:
            headers["X-HubSpot-RateLimit-Max"] = str(knobs.rate_limit)
            headers["X-HubSpot-RateLimit-Remaining"] = str(state.window_remaining(key))
            headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(int(knobs.rate_window * 1000))
        if knobs.daily_limit is not None:
            headers["X-HubSpot-RateLimit-Daily"] = str(knobs.daily_limit)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(max(knobs.daily_limit - state.daily_used, 0))
        return headers


class HubSpotState(SandboxState):
    """The portal: objects per type, ids counting up like HubSpot's numeric ids."""

    def __init__(self, *, token: str, knobs: Knobs) -> None:
        super().__init__(HubSpotFlavor(token), knobs=knobs)
        self.serial = 1000

    def insert(self, object_type: str, properties: dict[str, str]) -> dict[str, Any]:
        self.serial += 1
        object_id, stamp = str(self.serial), utc_iso(now())
        stored = {**properties, "hs_object_id": object_id, "createdate": stamp, MODIFIED[object_type]: stamp}
        obj = {"id": object_id, "properties": stored, "createdAt": stamp, "updatedAt": stamp, "archived": False}
        self.table(object_type)[object_id] = obj
        return obj

    def update(self, object_type: str, object_id: str, properties: dict[str, str]) -> dict[str, Any]:
        obj = self.table(object_type)[object_id]
        stamp = utc_iso(now())
        obj["properties"].update(properties, **{MODIFIED[object_type]: stamp})
        obj["updatedAt"] = stamp
        return obj

    def archive(self, object_type: str, object_id: str) -> None:
        """Archived objects stay listable with ``?archived=true`` (HubSpot keeps them 90 days)."""
        obj = self.table(object_type).pop(object_id, None)
        if obj is not None:
            stamp = utc_iso(now())
            self.table(f"{object_type}:archived")[object_id] = {
                **obj,
                "archived": True,
                "archivedAt": stamp,
                "updatedAt": stamp,
            }

    def change(self, obj: str, action: str, record_id: str | None, data: dict[str, Any]) -> dict[str, Any] | None:
        """A change made "from outside" the gateway (the ``/_sandbox/records`` admin route)."""
        object_type = {"contact": "contacts", "company": "companies", "deal": "deals"}.get(obj, obj)
        if object_type not in PROPERTIES:
            raise KeyError(obj)
        if action == "create":
            return self.insert(object_type, as_strings(data))
        if record_id not in self.table(object_type):
            raise KeyError(record_id)
        if action == "update":
            return self.update(object_type, record_id, as_strings(data))
        self.archive(object_type, record_id)
        return None


def validation_errors(state: HubSpotState, object_type: str, properties: Any) -> list[dict[str, Any]]:
    """HubSpot's per-property errors (``PROPERTY_DOESNT_EXIST``, ``INVALID_EMAIL``, ...), or none."""
    if not isinstance(properties, dict):
        return [{"message": "properties: must be an object", "code": "INVALID_INPUT"}]
    if state.take_validation_error():
        return [
            {
                "message": "Sandbox: injected validation error",
                "code": "INVALID_OPTION",
                "context": {"propertyName": [next(iter(properties), "email")]},
            }
        ]
    errors: list[dict[str, Any]] = []
    for name, value in properties.items():
        context = {"propertyName": [name]}
        if name not in PROPERTIES[object_type]:
            errors.append(
                {"message": f'Property "{name}" does not exist', "code": "PROPERTY_DOESNT_EXIST", "context": context}
            )
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            errors.append({"message": f"{name} must be a string", "code": "INVALID_INPUT", "context": context})
        elif name == "email" and value not in (None, "") and not is_email(str(value)):
            errors.append({"message": f"Email address {value} is invalid", "code": "INVALID_EMAIL", "context": context})
        elif name in NUMERIC and value not in (None, "") and not _is_number(value):
            errors.append({"message": f"{value} was not a valid number", "code": "INVALID_INTEGER", "context": context})
    return errors


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def as_strings(properties: dict[str, Any]) -> dict[str, str]:
    """HubSpot stores and returns every property value as a string."""
    return {k: ("" if v is None else str(v).lower() if isinstance(v, bool) else str(v)) for k, v in properties.items()}


def view(object_type: str, obj: dict[str, Any], names: list[str] | None) -> dict[str, Any]:
    """The object with the asked-for properties (plus the system ones), as HubSpot answers reads."""
    system = ("createdate", "hs_object_id", MODIFIED[object_type])
    wanted = [*(names if names is not None else DEFAULT_PROPERTIES[object_type]), *system]
    props = obj["properties"]
    return {**obj, "properties": {n: props.get(n) for n in dict.fromkeys(wanted)}}


def context(request: web.Request) -> tuple[HubSpotState, str]:
    raw = request.match_info["object_type"]
    object_type = _TYPE_IDS.get(raw, raw.lower())
    if object_type not in PROPERTIES:
        raise Reject(hs_error(400, "VALIDATION_ERROR", f"Unable to infer object type from: {raw}"))
    return request.app[HUBSPOT], object_type


def property_names(raw: str | list[Any] | None) -> list[str] | None:
    if raw is None:
        return None
    items = raw.split(",") if isinstance(raw, str) else [str(i) for i in raw]
    return [i.strip() for i in items if i.strip()]


def seed(state: HubSpotState) -> None:
    """A few demo objects: two companies, three contacts."""
    for name, domain in (("Acme Corporation", "acme.example.com"), ("Globex", "globex.example.com")):
        state.insert("companies", {"name": name, "domain": domain})
    for first, last in (("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing")):
        state.insert("contacts", {"firstname": first, "lastname": last, "email": f"{first.lower()}@example.com"})


HUBSPOT = web.AppKey("hubspot_sandbox", HubSpotState)
