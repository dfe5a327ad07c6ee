"""A Stripe sync asks /v1/events for the event types Stripe really emits for its object.

A subscription's changes are ``customer.subscription.*`` events, not ``subscription.*``
(https://docs.stripe.com/api/events/types). The fake below answers only what Stripe would: events
of the types asked for, newest first, with ``ending_before`` paging.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

from aiohttp import web
from sqlalchemy import select

from gateway.http import appkeys
from gateway.store import tables as t
from tests.conftest import GatewayFactory
from tests.syncs.harness import until

SYNC = "sync-subscriptions"


class FakeStripe:
    """Subscriptions and their events, as Stripe lists them (newest first)."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []  # oldest first
        self.asked: list[list[str]] = []  # types[] of every /v1/events call
        self._ids = itertools.count(1)

    def change(self, kind: str, subscription_id: str, **fields: Any) -> None:
        sub = self.subscriptions.setdefault(subscription_id, {"id": subscription_id, "object": "subscription"})
        sub.update(fields)
        event_id = f"evt_{next(self._ids):06d}"
        self.events.append({"id": event_id, "object": "event", "type": kind, "data": {"object": copy.deepcopy(sub)}})

    async def list_events(self, request: web.Request) -> web.Response:
        types = request.query.getall("types[]", [])
        self.asked.append(types)
        rows = [e for e in reversed(self.events) if e["type"] in types]
        limit = int(request.query.get("limit", "10"))
        before = request.query.get("ending_before")
        if before is not None:
            ids = [e["id"] for e in rows]
            if before not in ids:
                error = {"type": "invalid_request_error", "code": "resource_missing", "param": "ending_before"}
                return web.json_response({"error": error}, status=400)
            rows = rows[: ids.index(before)]
            page = rows[-limit:]
        else:
            page = rows[:limit]
        return web.json_response({"object": "list", "data": page, "has_more": len(rows) > len(page)})

    async def list_subscriptions(self, request: web.Request) -> web.Response:
        rows = list(reversed(self.subscriptions.values()))
        return web.json_response({"object": "list", "data": rows, "has_more": False})


async def test_a_subscription_sync_reads_customer_subscription_events(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """Backfilled, then updated upstream: the update reaches the stream through its event."""
    fake = FakeStripe()
    fake.change("customer.subscription.created", "sub_1", status="active")
    app = web.Application()
    app.router.add_get("/v1/events", fake.list_events)
    app.router.add_get("/v1/subscriptions", fake.list_subscriptions)
    server = await aiohttp_server(app)
    gw = await make_gateway(stream={"capture": True, "capture_lease_ttl": 3})
    credential = {
        "id": "cred-stripe",
        "provider": "stripe",
        "base_url": str(server.make_url("")).rstrip("/"),
        "auth": {"type": "bearer", "token": "sk_test_fake"},
        "rate_limit": {"rate": 1000, "per": 1, "burst": 1000},
    }
    async with gw.client.post("/v1/credentials", json=credential, headers=gw.auth()) as resp:
        assert resp.status == 201, await resp.text()
    sync = {"id": SYNC, "credential_id": "cred-stripe", "collections": ["stripe:subscription"],
            "options": {"poll_interval": 1}}  # fmt: skip
    async with gw.client.post("/v1/syncs", json=sync, headers=gw.auth()) as resp:
        assert resp.status == 201, await resp.text()
    gw.app[appkeys.SYNC_RUNNERS].poke(SYNC)

    async def status() -> str | None:
        r = t.records.c
        async with gw.app[appkeys.ENGINE].connect() as conn:
            row = (await conn.execute(select(r.data).where(r.sync_id == SYNC, r.upstream_id == "sub_1"))).first()
        return None if row is None else str(row.data.get("status"))

    async def is_(value: str) -> bool:
        return await status() == value

    await until("the backfill brought the subscription", lambda: is_("active"))
    fake.change("customer.subscription.updated", "sub_1", status="past_due")
    await until("the update arrived", lambda: is_("past_due"))
    assert all(types and all(k.startswith("customer.subscription.") for k in types) for types in fake.asked)
