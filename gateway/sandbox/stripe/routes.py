"""Stripe sandbox handlers: ``/v1/customers`` create, list, retrieve, update, delete; ``/v1/events``."""

from __future__ import annotations

import json
import operator
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from gateway.sandbox.common import Reject, now
from gateway.sandbox.stripe.state import STRIPE, StripeState, check_customer, parse_form, stripe_error

View = Callable[[web.Request], Awaitable[web.Response]]


async def _params(request: web.Request) -> dict[str, Any]:
    text = (await request.read()).decode("utf-8", errors="replace")
    if request.method in ("GET", "DELETE"):
        return parse_form(list(request.query.items()))
    return parse_form(parse_qsl(text, keep_blank_values=True))


def idempotent(view: View) -> View:
    """Stripe's ``Idempotency-Key``: replay a stored success, refuse the key with other parameters.

    Only answers of requests that executed are stored (as Stripe documents: a request refused by
    validation stores nothing, so the client may fix it and retry with the same key).
    """

    @wraps(view)
    async def wrapper(request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        if not key:
            return await view(request)
        state = request.app[STRIPE]
        endpoint, params = f"{request.method} {request.path}", await _params(request)
        stored = state.idempotency.get(key)
        if stored is not None:
            if (stored[0], stored[1]) != (endpoint, params):
                raise Reject(
                    stripe_error(
                        400,
                        "Keys for idempotent requests can only be used with the same "
                        f"parameters they were first used with. Try using a key other than "
                        f"'{key}' if you meant to execute a different request.",
                        kind="idempotency_error",
                    )
                )
            replay = web.Response(status=stored[2], body=stored[3], content_type="application/json")
            replay.headers["Idempotent-Replayed"] = "true"
            return replay
        response = await view(request)
        if response.status < 400 and isinstance(response.body, bytes):
            state.idempotency[key] = (endpoint, params, response.status, response.body)
        return response

    return wrapper


def _customer(state: StripeState, customer_id: str, *, allow_deleted: bool = False) -> dict[str, Any]:
    customer = state.table("customers").get(customer_id)
    if customer is None or (customer.get("deleted") and not allow_deleted):
        raise Reject(stripe_error(404, f"No such customer: '{customer_id}'", code="resource_missing", param="id"))
    return customer


@idempotent
async def create_customer(request: web.Request) -> web.Response:
    state = request.app[STRIPE]
    params = await _params(request)
    check_customer(state, params)
    return web.json_response(state.insert(params))


@idempotent
async def update_customer(request: web.Request) -> web.Response:
    state = request.app[STRIPE]
    customer = _customer(state, request.match_info["id"])
    params = await _params(request)
    check_customer(state, params, update=True)
    return web.json_response(state.update(customer, params))


async def get_customer(request: web.Request) -> web.Response:
    """A deleted customer still answers, as the ``{id, object, deleted: true}`` stub."""
    return web.json_response(_customer(request.app[STRIPE], request.match_info["id"], allow_deleted=True))


async def delete_customer(request: web.Request) -> web.Response:
    state = request.app[STRIPE]
    return web.json_response(state.delete(_customer(state, request.match_info["id"])))


def _limit(raw: str) -> int:
    if not raw.isdigit():
        raise Reject(stripe_error(400, f"Invalid integer: {raw}", code="parameter_invalid_integer", param="limit"))
    limit = int(raw)
    if not 1 <= limit <= 100:
        raise Reject(
            stripe_error(400, "This value must be between 1 and 100.", code="parameter_invalid_integer", param="limit")
        )
    return limit


# Stripe's ``created`` filter on lists: ``created[gt]=``, ``[gte]``, ``[lt]``, ``[lte]`` (unix seconds).
_CREATED = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def _created_in(rows: list[dict[str, Any]], query: Any) -> list[dict[str, Any]]:
    for bound, compare in _CREATED.items():
        raw = query.get(f"created[{bound}]")
        if raw is None:
            continue
        if not raw.isdigit():
            error = stripe_error(400, f"Invalid integer: {raw}", code="parameter_invalid_integer", param="created")
            raise Reject(error)
        rows = [r for r in rows if compare(r["created"], int(raw))]
    return rows


EVENT_RETENTION = 30 * 86400  # seconds: https://docs.stripe.com/api/events ("up to 30 days")


def _listed(rows: list[dict[str, Any]], query: Any, url: str, noun: str) -> web.Response:
    """One page of a newest-first list; ``starting_after``/``ending_before`` cursors are object ids."""
    limit = _limit(query.get("limit", "10"))
    ids = [r["id"] for r in rows]
    for param in ("starting_after", "ending_before"):
        cursor = query.get(param)
        if cursor is not None and cursor not in ids:
            raise Reject(stripe_error(400, f"No such {noun}: '{cursor}'", code="resource_missing", param=param))
    if "starting_after" in query:
        rows = rows[ids.index(query["starting_after"]) + 1 :]
        page = rows[:limit]
    elif "ending_before" in query:
        rows = rows[: ids.index(query["ending_before"])]
        page = rows[-limit:]
    else:
        page = rows[:limit]
    body = {"object": "list", "data": page, "has_more": len(rows) > len(page), "url": url}
    return web.Response(text=json.dumps(body), content_type="application/json")


async def list_customers(request: web.Request) -> web.Response:
    state = request.app[STRIPE]
    rows = [c for c in reversed(state.table("customers").values()) if not c.get("deleted")]
    if "email" in request.query:
        rows = [c for c in rows if c.get("email") == request.query["email"]]
    rows = _created_in(rows, request.query)
    return _listed(rows, request.query, "/v1/customers", "customer")


async def list_events(request: web.Request) -> web.Response:
    """``GET /v1/events?type=&types[]=``: newest first, only the last 30 days' as in Stripe.

    An older event is gone: a cursor naming it is refused like any unknown id.
    """
    state = request.app[STRIPE]
    types = set(request.query.getall("types[]", [])) | set(request.query.getall("type", []))
    kept = now() - EVENT_RETENTION
    rows = [e for e in reversed(state.events) if e["created"] >= kept and (not types or e["type"] in types)]
    return _listed(rows, request.query, "/v1/events", "event")


ROUTES = [
    web.post("/v1/customers", create_customer),
    web.get("/v1/customers", list_customers),
    web.get("/v1/events", list_events),
    web.get("/v1/customers/{id}", get_customer),
    web.post("/v1/customers/{id}", update_customer),
    web.delete("/v1/customers/{id}", delete_customer),
]
