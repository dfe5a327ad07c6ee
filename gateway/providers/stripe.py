"""Stripe: one form-encoded call per record, each with an ``Idempotency-Key`` of its own.

``stripe:customer`` is ``/v1/customers``. Stripe has no batch endpoints, so a mutation of n records
is n calls; the key (a hash of the mutation's seed and the record's position) makes a call that the
pacer or a client retries apply once. Answers are the full objects, so nothing is read back.
Nested data is flattened the way Stripe expects forms: ``metadata[plan]=pro``, ``items[0][price]=p``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from gateway.domain.models import DISPLAY_NAMES
from gateway.providers.base import Call, Item, Kind, Query, Target, Translator, UpstreamRecord, Written, checked

_IRREGULAR = {"entity": "entities"}
# Fields of an object that its writes do not take, beside ``read_only`` (the customer's: its object
# page against its create and update pages, https://docs.stripe.com/api/customers): fields only
# answers carry, then those only an update takes (dropped from creates). A test clock is attached
# at creation through the proxy; its field is answer-only here.
_ANSWER_ONLY = {
    "customer": frozenset(
        {"currency", "default_currency", "delinquent", "discount", "invoice_credit_balance", "cash_balance"}
        | {"sources", "subscriptions", "tax_ids", "test_clock"}
    ),
}
_UPDATE_ONLY = {"customer": frozenset({"default_source"})}


def resource(obj: str) -> str:
    """``customer`` -> ``customers``, ``payment_intent`` -> ``payment_intents``."""
    name = checked(obj, r"[a-z][a-z_]{0,60}", field="collection_id")
    return _IRREGULAR.get(name, name if name.endswith("s") else name + "s")


def form_encode(data: Mapping[str, Any], prefix: str = "") -> Query:
    """Stripe's bracket notation; None becomes "" (Stripe's way to unset a field)."""
    pairs: Query = []
    for key, value in data.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            pairs.extend(form_encode(value, name))
        elif isinstance(value, list | tuple):
            pairs.extend(form_encode({str(i): v for i, v in enumerate(value)}, name))
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        else:
            pairs.append((name, "" if value is None else str(value)))
    return pairs


class Stripe(Translator):
    name = DISPLAY_NAMES["stripe"]
    read_only = frozenset({"id", "object", "created", "livemode", "deleted"})
    replays_writes = True

    def chunk_size(self, kind: Kind) -> int:
        return 1

    def write(self, kind: Kind, items: Sequence[Item], target: Target) -> Call:
        (item,) = items
        path = f"/v1/{resource(target.obj)}"
        if kind != "create":
            path += f"/{item.upstream_id}"
        key = hashlib.sha256(f"{target.seed}:{kind}:{item.index}".encode()).hexdigest()
        headers = {"Idempotency-Key": key}
        if kind == "delete":
            return Call("DELETE", path, headers=headers)
        dropped = _ANSWER_ONLY.get(target.obj, frozenset())
        if kind == "create":
            dropped |= _UPDATE_ONLY.get(target.obj, frozenset())
        data = {k: v for k, v in self.writable(item.data).items() if k not in dropped}
        return Call("POST", path, form=form_encode(data), headers=headers)

    def written(self, kind: Kind, items: Sequence[Item], body: Any) -> Written:
        obj = body if isinstance(body, dict) and body.get("id") else None
        if obj is None:
            return Written(ids=[], failure=self.validation_error("unexpected answer without an id"))
        if kind == "delete":
            return Written(ids=[str(obj["id"])])
        return Written(ids=[str(obj["id"])], records=[UpstreamRecord(str(obj["id"]), dict(obj), None)])

    def error_message(self, body: Any) -> str:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            return str(error.get("message") or error.get("code") or error.get("type") or "")
        return body if isinstance(body, str) else ""

    def is_not_found(self, status: int, body: Any) -> bool:
        error = body.get("error") if isinstance(body, dict) else None
        return status == 404 or (isinstance(error, dict) and error.get("code") == "resource_missing")
