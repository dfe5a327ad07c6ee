"""Pull consumer HTTP API: receive (long-poll), ack, nack, visibility redelivery, errors."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.http import appkeys
from gateway.stream import delivery
from tests.conftest import Gateway, GatewayFactory
from tests.stream.helpers import add_consumer, append, insert, seed_sync

HOOK = {"kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}


async def _post(gw: Gateway, path: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    resp = await gw.client.post(path, json=body, headers=gw.auth(token))
    return resp.status, await resp.json()


async def _ready(make_gateway: GatewayFactory, **consumer: Any) -> Gateway:
    gw = await make_gateway()
    await seed_sync(gw.app)
    await add_consumer(gw.app, id="reader", kind="pull", **consumer)
    return gw


async def test_receive_then_ack_advances_position_and_clears_pending(make_gateway: GatewayFactory) -> None:
    """Acked events are gone, and the consumer view shows the new position and no pending events."""
    gw = await _ready(make_gateway)
    events = await append(gw.app, [insert("003A", Name="Ada"), insert("003B")])
    status, body = await _post(gw, "/v1/consumers/reader/receive", {"batch_size": 10, "wait_for": 0})
    assert status == 200
    assert [d["event"]["seq"] for d in body["data"]] == [e.seq for e in events]
    assert body["data"][0]["event"]["record"]["data"] == {"Id": "003A", "Name": "Ada"}
    status, acked = await _post(gw, "/v1/consumers/reader/ack", {"ack_ids": [d["ack_id"] for d in body["data"]]})
    assert (status, acked) == (200, {"acked": 2})
    view = await (await gw.client.get("/v1/consumers/reader", headers=gw.auth())).json()
    assert view["position"] == events[-1].seq and view["pending"] == 0
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'gateway_consumer_pending_events{consumer="reader"} 0.0' in metrics


async def test_batch_size_limits_a_receive(make_gateway: GatewayFactory) -> None:
    """A receive returns at most batch_size events, lowest seq first."""
    gw = await _ready(make_gateway)
    events = await append(gw.app, [insert(f"003{i}") for i in range(5)])
    _, body = await _post(gw, "/v1/consumers/reader/receive", {"batch_size": 2, "wait_for": 0})
    assert [d["event"]["seq"] for d in body["data"]] == [events[0].seq, events[1].seq]


async def test_long_poll_returns_as_soon_as_an_event_is_appended(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiting receive is woken by the append's signal, not by the fallback re-check."""
    monkeypatch.setattr(delivery, "RECHECK_SECONDS", 60.0)  # only the wake-up signal can answer in time
    gw = await _ready(make_gateway)
    appended = gw.app[appkeys.STREAM].signals.appended
    waiting = asyncio.Event()
    original = appended.wait

    async def wait(ticket: asyncio.Event, seconds: float) -> bool:
        waiting.set()
        return bool(await original(ticket, seconds))

    monkeypatch.setattr(appended, "wait", wait)
    receive = asyncio.create_task(_post(gw, "/v1/consumers/reader/receive", {"wait_for": 20000}))
    await asyncio.wait_for(waiting.wait(), 10)  # the receive found nothing and sleeps on the signal
    await append(gw.app, [insert("003A")])
    status, body = await asyncio.wait_for(receive, 5)
    assert status == 200 and len(body["data"]) == 1


async def test_empty_receive_waits_for_wait_for(make_gateway: GatewayFactory) -> None:
    """With nothing to deliver, receive answers an empty list after about wait_for ms."""
    gw = await _ready(make_gateway)
    started = time.monotonic()
    status, body = await _post(gw, "/v1/consumers/reader/receive", {"wait_for": 300})
    assert (status, body) == (200, {"data": []})
    assert 0.25 < time.monotonic() - started < 10


async def test_nack_makes_events_receivable_again(make_gateway: GatewayFactory) -> None:
    """A nacked event is delivered again with a fresh ack id."""
    gw = await _ready(make_gateway)
    [event] = await append(gw.app, [insert("003A")])
    _, first = await _post(gw, "/v1/consumers/reader/receive", {"wait_for": 0})
    ack_id = first["data"][0]["ack_id"]
    assert await _post(gw, "/v1/consumers/reader/nack", {"ack_ids": [ack_id]}) == (200, {"nacked": 1})
    _, again = await _post(gw, "/v1/consumers/reader/receive", {"wait_for": 0})
    assert again["data"][0]["event"]["seq"] == event.seq
    assert again["data"][0]["ack_id"] != ack_id


async def test_unacked_events_are_redelivered_after_the_visibility_timeout(make_gateway: GatewayFactory) -> None:
    """An event not acked in time comes back; its old ack id then no longer acknowledges it."""
    gw = await _ready(make_gateway, visibility_timeout=0.5)
    [event] = await append(gw.app, [insert("003A")])
    _, first = await _post(gw, "/v1/consumers/reader/receive", {"wait_for": 0})
    _, hidden = await _post(gw, "/v1/consumers/reader/receive", {"wait_for": 0})
    assert hidden["data"] == []
    _, again = await _post(gw, "/v1/consumers/reader/receive", {"wait_for": 5000})
    assert again["data"][0]["event"]["seq"] == event.seq
    status, body = await _post(gw, "/v1/consumers/reader/ack", {"ack_ids": [first["data"][0]["ack_id"]]})
    assert (status, body) == (200, {"acked": 0})


async def test_unknown_ack_ids_are_not_an_error(make_gateway: GatewayFactory) -> None:
    """Acking ids that never existed answers 200 with acked 0."""
    gw = await _ready(make_gateway)
    assert await _post(gw, "/v1/consumers/reader/ack", {"ack_ids": ["nope", "x.1"]}) == (200, {"acked": 0})


async def test_bad_receive_body_names_the_field(make_gateway: GatewayFactory) -> None:
    """Out-of-range or unknown fields get a 400 naming the field."""
    gw = await _ready(make_gateway)
    for body, field in (({"batch_size": 0}, "batch_size"), ({"wait_for": 60001}, "wait_for"), ({"x": 1}, "x")):
        status, error = await _post(gw, "/v1/consumers/reader/receive", body)
        assert status == 400 and error["code"] == "invalid_request"
        assert field in error["fields"]


async def test_webhook_consumer_cannot_be_received_over_http(make_gateway: GatewayFactory) -> None:
    """Receive and ack on a webhook consumer are 409 conflicts."""
    gw = await _ready(make_gateway)
    await add_consumer(gw.app, id="hooks", **HOOK)
    assert (await _post(gw, "/v1/consumers/hooks/receive", {"wait_for": 0}))[0] == 409
    assert (await _post(gw, "/v1/consumers/hooks/ack", {"ack_ids": ["a"]}))[0] == 409


async def test_tokens_restricted_to_other_ids_get_403(make_gateway: GatewayFactory) -> None:
    """A consumers token limited with --only to another consumer may not receive from this one."""
    gw = await _ready(make_gateway)
    allowed = await gw.token("reader-app", ["consumers"], only=["consumer:reader"])
    other = await gw.token("other-app", ["consumers"], only=["consumer:someone-else"])
    assert (await _post(gw, "/v1/consumers/reader/receive", {"wait_for": 0}, allowed))[0] == 200
    status, body = await _post(gw, "/v1/consumers/reader/receive", {"wait_for": 0}, other)
    assert status == 403 and body["code"] == "forbidden"


async def test_unknown_consumer_is_404(make_gateway: GatewayFactory) -> None:
    """Receiving from a consumer that does not exist is a 404."""
    gw = await _ready(make_gateway)
    assert (await _post(gw, "/v1/consumers/ghost/receive", {"wait_for": 0}))[0] == 404


async def test_receive_endpoints_are_in_the_openapi_document(make_gateway: GatewayFactory) -> None:
    """The OpenAPI document describes receive with its request model's bounds."""
    gw = await _ready(make_gateway)
    doc = await (await gw.client.get("/v1/openapi.json", headers=gw.auth())).json()
    assert "/v1/consumers/{id}/receive" in doc["paths"]
    assert doc["components"]["schemas"]["ReceiveRequest"]["properties"]["batch_size"]["maximum"] == 1000


async def test_a_deleted_consumer_leaves_no_pending_series(make_gateway: GatewayFactory) -> None:
    """Once the consumer is gone, the next refresh drops its gateway_consumer_pending_events series."""
    gw = await _ready(make_gateway)
    await _post(gw, "/v1/consumers/reader/receive", {"wait_for": 0})
    assert 'consumer="reader"' in await (await gw.client.get("/metrics")).text()
    assert (await gw.client.delete("/v1/consumers/reader", headers=gw.auth())).status == 204
    remaining = [c.id for c in await gw.app[appkeys.OBJECTS].all_consumers()]
    await gw.app[appkeys.STREAM].queue.refresh_all_pending(remaining)
    assert 'consumer="reader"' not in await (await gw.client.get("/metrics")).text()
