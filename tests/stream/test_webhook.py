"""Webhook consumers: signed batches to a real receiver, retries, failing status and recovery."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook

from tests.conftest import Gateway, GatewayFactory
from tests.stream.helpers import append, insert, seed_sync
from tests.support import poll

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Receiver:
    """A real webhook endpoint on loopback that fails while ``fail`` is true (or ``fail_times`` remain)."""

    fail: bool = False
    fail_times: int = 0
    posts: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.posts.append((dict(request.headers), await request.read()))
        if self.fail or self.fail_times > 0:
            self.fail_times -= 1
            return web.Response(status=500)
        return web.Response(status=204)


async def _receiver(aiohttp_server: Any, **kwargs: Any) -> Receiver:
    receiver = Receiver(**kwargs)
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    receiver.url = str(server.make_url("/hook"))
    return receiver


async def _hook(gw: Gateway, receiver: Receiver, **settings: Any) -> None:
    body = {"id": "hooks", "kind": "webhook", "url": receiver.url, "secret": SECRET, **settings}
    resp = await gw.client.post("/v1/consumers", json=body, headers=gw.auth())
    assert resp.status == 201, await resp.text()


async def _consumer(gw: Gateway) -> dict[str, Any]:
    return dict(await (await gw.client.get("/v1/consumers/hooks", headers=gw.auth())).json())


async def test_batches_are_signed_per_standard_webhooks(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """The standardwebhooks verifier accepts every POST, and events arrive in stream order."""
    receiver = await _receiver(aiohttp_server)
    gw = await make_gateway()
    await seed_sync(gw.app)
    await _hook(gw, receiver, batch_size=2)
    events = await append(gw.app, [insert(f"003{i}") for i in range(5)])

    async def all_acked() -> bool:
        return bool((await _consumer(gw))["pending"] == 0) and len(receiver.posts) >= 3

    await poll("all acked", all_acked, 15)
    verifier = Webhook(SECRET)
    seqs = [e["seq"] for headers, body in receiver.posts for e in verifier.verify(body, headers)["data"]]
    assert seqs == [e.seq for e in events]
    assert (await _consumer(gw))["position"] == events[-1].seq


async def test_a_failed_post_is_retried_with_the_same_message_id(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """Two 500s, then success: the batch is re-sent with the same webhook-id until accepted."""
    receiver = await _receiver(aiohttp_server, fail_times=2)
    gw = await make_gateway()
    await seed_sync(gw.app)
    await _hook(gw, receiver)
    await append(gw.app, [insert("003A")])

    async def acked() -> bool:
        return bool((await _consumer(gw))["pending"] == 0)

    await poll("acked", acked, 15)
    assert len(receiver.posts) == 3
    assert len({headers["webhook-id"] for headers, _ in receiver.posts}) == 1


async def test_consumer_turns_failing_keeps_its_events_and_recovers(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """Past max_retry_duration it is 'failing' with its event pending; once the receiver heals it is active again."""
    receiver = await _receiver(aiohttp_server, fail=True)
    gw = await make_gateway()
    await seed_sync(gw.app)
    await _hook(gw, receiver, max_retry_duration=0.5)
    [event] = await append(gw.app, [insert("003A")])

    async def failing() -> bool:
        return bool((await _consumer(gw))["status"] == "failing")

    await poll("failing", failing, 15)
    view = await _consumer(gw)
    assert view["pending"] == 1 and view["position"] < event.seq
    receiver.fail = False

    async def recovered() -> bool:
        view = await _consumer(gw)
        return bool(view["status"] == "active" and view["pending"] == 0)

    await poll("recovered", recovered, 15)
    assert (await _consumer(gw))["position"] == event.seq


@pytest.mark.parametrize(
    ("chunk", "pause", "timeout"),
    [
        (65536, 0.01, 30),  # endless and fast: past the drain's 64 KiB cap at once
        (1, 0.05, 1),  # endless and slow: still under the cap at the consumer's timeout
    ],
)
async def test_an_endless_answer_body_does_not_hold_the_delivery(
    make_gateway: GatewayFactory, aiohttp_server: Any, chunk: int, pause: float, timeout: int
) -> None:
    """The receiver's 2xx body was read whole: one that never ends (or is huge) held the delivery until
    its timeout and made it a failure, memory growing meanwhile; drained, one that trickled past the
    timeout was still a failure, retried for ever. Its status is what counts: acknowledged at once."""
    stop = asyncio.Event()
    posts = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal posts
        posts += 1
        await request.read()
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        while not stop.is_set():
            await resp.write(b"x" * chunk)
            await asyncio.sleep(pause)  # a receiver that keeps talking
        return resp

    app = web.Application()
    app.router.add_post("/hook", endless)
    server = await aiohttp_server(app, host="127.0.0.1")
    try:
        gw = await make_gateway()
        await seed_sync(gw.app)
        url = str(server.make_url("/hook"))
        body = {"id": "hooks", "kind": "webhook", "url": url, "secret": SECRET, "timeout": timeout}
        assert (await gw.client.post("/v1/consumers", json=body, headers=gw.auth())).status == 201
        await append(gw.app, [insert("003A")])

        async def acked() -> bool:
            return bool((await _consumer(gw))["pending"] == 0)

        await poll("the batch acknowledged on the 200 alone", acked, 10)
        assert posts == 1
    finally:
        stop.set()
