"""A mutation's batch write that the upstream accepted is never sent again, whatever its headers say.

HubSpot and Salesforce report a spent window on successful answers (``X-HubSpot-RateLimit-Remaining:
0``, ``Sforce-Limit-Info`` at 95%): the pacer pauses, but the batch must reach the upstream once and
its records the stream once. Stripe reports nothing on success; its refusals (429) are retried with
the same ``Idempotency-Key``, so a resend can never create twice.
"""

from __future__ import annotations

from typing import Any

from gateway.sandbox.common import Knobs
from tests.conftest import GatewayFactory
from tests.mutations.harness import SPECS, connect

THREE = [{"email": f"user{i}@example.com", "firstname": f"U{i}"} for i in range(3)]


async def test_hubspot_batch_answered_with_the_windows_last_call_is_sent_once(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """A batch create answered 201 with Remaining: 0 is one batch upstream, 3 contacts, 3 events."""
    gw = await make_gateway()
    env = await connect(gw, aiohttp_server, "hubspot", knobs=Knobs(rate_limit=1, rate_window=1.0))
    records = await env.create(*THREE)
    assert len(records) == 3
    creates = env.sandbox.requests_to("/crm/v3/objects/contacts/batch/create", "POST")
    assert len(creates) == 1, "the accepted batch create was sent again"
    assert len(env.sandbox.table("contacts")) == 3
    assert [action for action, _ in await env.stream_actions()] == ["insert"] * 3


async def test_salesforce_collection_answered_at_95_percent_is_sent_once(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """sObject Collections create answered with api-usage at 95%: one write, 3 contacts, 3 events."""
    gw = await make_gateway()
    env = await connect(gw, aiohttp_server, "salesforce", knobs=Knobs(daily_limit=20))
    env.sandbox.daily_used = 18  # the create is the 19th call of 20: its answer says 95%
    sample = SPECS["salesforce"].sample
    records = await env.create(*({**sample, "Email": f"u{i}@example.com"} for i in range(3)))
    assert len(records) == 3
    assert len(env.writes()) == 1, "the accepted collection create was sent again"
    assert len(env.sandbox.table("Contact")) == 3
    assert [action for action, _ in await env.stream_actions()] == ["insert"] * 3


async def test_stripe_refused_create_is_resent_with_the_same_idempotency_key(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """A Stripe create refused with 429 is sent again with the same key: 2 customers for 2 records."""
    gw = await make_gateway()
    env = await connect(gw, aiohttp_server, "stripe", knobs=Knobs(rate_limit=1, rate_window=1.0))
    sample = SPECS["stripe"].sample
    records = await env.create(sample, {**sample, "email": "leto@arrakis.org"})
    assert len(records) == 2
    posts = env.sandbox.requests_to("/v1/customers", "POST")
    keys = [request.headers["Idempotency-Key"] for request in posts]
    assert len(posts) >= 2 and len(set(keys)) == 2, keys
    assert len([c for c in env.sandbox.table("customers").values() if not c.get("deleted")]) == 2
    assert [action for action, _ in await env.stream_actions()] == ["insert"] * 2
