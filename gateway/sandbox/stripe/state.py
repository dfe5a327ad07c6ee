"""Stripe customers API stand-in: form-encoded writes, Stripe's error body, idempotency keys.

Requests are ``application/x-www-form-urlencoded`` with Stripe's bracket nesting
(``metadata[plan]=pro``, ``address[city]=Paris``, ``preferred_locales[]=fr``); answers are JSON with a
``Request-Id`` header. ``Idempotency-Key`` on a POST replays the first answer (``Idempotent-Replayed:
true``) when the parameters match and refuses with 400 ``idempotency_error`` when they differ.
Authentication is the secret key as the basic-auth username, or as a bearer token.
"""

from __future__ import annotations

import base64
import copy
import hmac
import itertools
import re
from typing import Any

from aiohttp import web

from gateway.sandbox.common import Flavor, Knobs, Reject, SandboxState, is_email, now, random_id

DEFAULT_KEY = "sk_test_sandbox_key_0123456789"  # a sandbox credential, not a secret
CUSTOMER_PARAMS = frozenset(
    {
        "email",
        "name",
        "phone",
        "description",
        "metadata",
        "address",
        "preferred_locales",
        "balance",
        "shipping",
        "invoice_prefix",
        "tax_exempt",
        "invoice_settings",
        "next_invoice_sequence",
        "expand",
    }
)
CUSTOMER_UPDATE_PARAMS = CUSTOMER_PARAMS | {"default_source"}  # the update also takes these
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def stripe_error(
    status: int, message: str, *, kind: str = "invalid_request_error", code: str | None = None, param: str | None = None
) -> web.Response:
    """Stripe's error body: ``{"error": {type, code, message, param, doc_url}}``."""
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
        error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
    if param:
        error["param"] = param
    return web.json_response({"error": error}, status=status)


class StripeFlavor(Flavor):
    name = "stripe"
    sends_retry_after = False  # https://docs.stripe.com/rate-limits: a 429 says nothing of when to retry

    def __init__(self, secret_key: str) -> None:
        self._key = secret_key

    def authenticate(self, request: web.Request, state: SandboxState) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value, validate=True).decode().partition(":")[0]
            except (ValueError, UnicodeDecodeError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.encode(), self._key.encode())

    def unauthorized(self) -> web.Response:
        return stripe_error(401, "Invalid API Key provided: sk_test_****")

    def throttled(self, retry_after: float, *, daily: bool) -> web.Response:
        return stripe_error(
            429,
            "Request rate limit exceeded. You can learn more about rate limits here "
            "https://stripe.com/docs/rate-limits.",
            code="rate_limit",
        )

    def server_error(self, status: int) -> web.Response:
        return stripe_error(status, "An unknown error occurred", kind="api_error")

    def route_missing(self, request: web.Request) -> web.Response:
        return stripe_error(404, f"Unrecognized request URL ({request.method}: {request.path}).")

    def limit_headers(self, state: SandboxState, key: str) -> dict[str, str]:
        return {"Request-Id": random_id("req_", 14), "Stripe-Version": "2024-06-20"}


class StripeState(SandboxState):
    """The account: customers (deleted ones keep a stub) and idempotency keys seen."""

    def __init__(self, *, secret_key: str, knobs: Knobs) -> None:
        super().__init__(StripeFlavor(secret_key), knobs=knobs)
        # key -> (method + path, params, status, body)
        self.idempotency: dict[str, tuple[str, dict[str, Any], int, bytes]] = {}
        self.events: list[dict[str, Any]] = []  # oldest first, as they happened

    def reset(self) -> None:
        super().reset()
        self.idempotency.clear()
        self.events.clear()

    def emit(self, kind: str, obj: dict[str, Any]) -> None:
        """Record an event (``customer.created`` ...) with a snapshot of the object, as Stripe does."""
        self.events.append(
            {
                "id": random_id("evt_", 24),
                "object": "event",
                "api_version": "2024-06-20",
                "created": int(now()),
                "data": {"object": copy.deepcopy(obj)},
                "livemode": False,
                "type": kind,
            }
        )

    def update(self, customer: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        apply_params(customer, params)
        self.emit("customer.updated", customer)
        return customer

    def delete(self, customer: dict[str, Any]) -> dict[str, Any]:
        stub = {"id": customer["id"], "object": "customer", "deleted": True}
        self.table("customers")[customer["id"]] = stub
        self.emit("customer.deleted", customer)
        return stub

    def change(self, obj: str, action: str, record_id: str | None, data: dict[str, Any]) -> dict[str, Any] | None:
        """A change made "from outside" the gateway (the ``/_sandbox/records`` admin route)."""
        if obj not in ("customer", "customers"):
            raise KeyError(obj)
        if action == "create":
            return self.insert(data)
        customer = self.table("customers").get(record_id or "")
        if customer is None or customer.get("deleted"):
            raise KeyError(record_id)
        if action == "update":
            return self.update(customer, data)
        self.delete(customer)
        return None

    def insert(self, params: dict[str, Any]) -> dict[str, Any]:
        customer: dict[str, Any] = {
            "id": random_id("cus_", 14),
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": int(now()),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": None,
            "invoice_prefix": random_id("", 8).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": {},
            "name": None,
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        apply_params(customer, params)
        self.table("customers")[customer["id"]] = customer
        self.emit("customer.created", customer)
        return customer


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket form encoding -> nested dicts and lists."""
    result: dict[str, Any] = {}
    for raw_key, value in pairs:
        match = _KEY.match(raw_key)
        if match is None:
            raise Reject(stripe_error(400, f"Invalid parameter name: {raw_key}", code="parameter_invalid"))
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node: Any = result
        for part, following in itertools.pairwise(path):
            if not isinstance(node, dict):
                raise Reject(stripe_error(400, f"Invalid parameter: {raw_key}", code="parameter_invalid"))
            node = node.setdefault(part, [] if following == "" or following.isdigit() else {})
        if isinstance(node, list):
            node.append(value)
        elif isinstance(node, dict) and not isinstance(node.get(path[-1]), (dict, list)):
            node[path[-1]] = value
        else:
            raise Reject(stripe_error(400, f"Invalid parameter: {raw_key}", code="parameter_invalid"))
    return result


def check_customer(state: StripeState, params: dict[str, Any], *, update: bool = False) -> None:
    """Unknown parameters and bad values get Stripe's 400 naming the ``param``."""
    for name in params:
        if name not in (CUSTOMER_UPDATE_PARAMS if update else CUSTOMER_PARAMS):
            raise Reject(stripe_error(400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name))
    if state.take_validation_error():
        raise Reject(stripe_error(400, "Sandbox: injected validation error", code="parameter_invalid", param="email"))
    email = params.get("email")
    if email not in (None, "") and not is_email(email):
        raise Reject(stripe_error(400, f"Invalid email address: {email}", code="email_invalid", param="email"))
    metadata = params.get("metadata", {})
    if metadata != "" and (not isinstance(metadata, dict) or len(metadata) > 50):
        raise Reject(
            stripe_error(
                400, "Invalid metadata: must be a hash of at most 50 keys", code="parameter_invalid", param="metadata"
            )
        )
    for name in ("balance", "next_invoice_sequence"):
        if name in params and not re.fullmatch(r"-?\d+", str(params[name])):
            raise Reject(
                stripe_error(400, f"Invalid integer: {params[name]}", code="parameter_invalid_integer", param=name)
            )


def apply_params(customer: dict[str, Any], params: dict[str, Any]) -> None:
    """Write parameters; an empty string unsets a field or a metadata key, as in Stripe."""
    for name, value in params.items():
        if name == "expand":
            continue
        if name == "metadata" and value == "":
            customer["metadata"] = {}  # metadata="" unsets every key
        elif name == "metadata":
            for key, item in value.items():
                if item == "":
                    customer["metadata"].pop(key, None)
                else:
                    customer["metadata"][key] = item
        elif name == "invoice_settings" and isinstance(value, dict):
            customer["invoice_settings"].update(value)
        elif name in ("balance", "next_invoice_sequence"):
            customer[name] = int(value)
        else:
            customer[name] = None if value == "" else value


def seed(state: StripeState) -> None:
    """A few demo customers."""
    for first, last in (("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing")):
        state.insert(
            {"name": f"{first} {last}", "email": f"{first.lower()}@example.com", "metadata": {"source": "demo"}}
        )


STRIPE = web.AppKey("stripe_sandbox", StripeState)
