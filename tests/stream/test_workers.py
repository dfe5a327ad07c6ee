"""Workers: one owner per consumer through leases, takeover after expiry, order kept across a crash."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import insert, select, update

from gateway.config import StoreConfig
from gateway.http import appkeys
from gateway.observability.metrics import Metrics
from gateway.store import tables as t
from gateway.store.db import create_engine, migrate
from gateway.store.objects import Objects
from gateway.stream.consumers.workers import Workers
from gateway.stream.service import Stream
from gateway.vault.crypto import Keyring
from tests.stream.helpers import add_consumer, append, seed_sync
from tests.stream.helpers import insert as record_insert
from tests.support import poll

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
async def replica(store_url: str, keyring: Keyring) -> AsyncIterator[dict[Any, Any]]:
    """The stream pieces of one replica without its HTTP app, so the test drives the supervisor."""
    engine = create_engine(StoreConfig(url=store_url))
    await migrate(engine)
    objects = Objects(engine, keyring)
    yield {appkeys.ENGINE: engine, appkeys.OBJECTS: objects, appkeys.STREAM: Stream(engine, Metrics())}
    await engine.dispose()


async def test_held_batch_is_redelivered_before_newer_events(replica: dict[Any, Any]) -> None:
    """An ordered claim skips nothing: while a crashed worker's batch is hidden, newer events wait."""
    await seed_sync(replica)
    await add_consumer(replica, id="mirror", kind="pull")
    queue = replica[appkeys.STREAM].queue
    [first] = await append(replica, [record_insert("003A")])
    assert [d.event.seq for d in await queue.claim("mirror", batch_size=5, visibility=0.5, ordered=True)] == [first.seq]
    [second] = await append(replica, [record_insert("003B")])
    assert await queue.claim("mirror", batch_size=5, visibility=30, ordered=True) == []
    claimed: list[int] = []

    async def redelivered() -> bool:
        claimed.extend(d.event.seq for d in await queue.claim("mirror", batch_size=5, visibility=30, ordered=True))
        return bool(claimed)

    await poll("the held batch redelivered", redelivered)
    assert claimed == [first.seq, second.seq]


async def test_an_expired_lease_is_taken_over(replica: dict[Any, Any], aiohttp_server: Any) -> None:
    """A consumer leased by a dead replica is left alone until the lease expires, then delivered by us."""
    posts: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        posts.append(await request.read())
        return web.Response(status=200)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver, host="127.0.0.1")
    await seed_sync(replica)
    await add_consumer(replica, id="hooks", kind="webhook", url=str(server.make_url("/hook")), secret=SECRET)
    engine = replica[appkeys.ENGINE]
    async with engine.begin() as conn:
        await conn.execute(insert(t.leases).values(name="consumer:hooks", owner="dead", expires_at=time.time() + 60))
    await append(replica, [record_insert("003A")])
    workers = Workers(
        objects=replica[appkeys.OBJECTS],
        stream=replica[appkeys.STREAM],
        retention=86400,
        shutdown_timeout=5,
        lease_ttl=3,
        owner="alive",
    )
    try:
        await workers.tick()
        assert "hooks" not in workers.running
        async with engine.begin() as conn:
            await conn.execute(update(t.leases).values(expires_at=time.time() - 1))
        await workers.tick()
        assert "hooks" in workers.running

        async def delivered() -> bool:
            return bool(posts)

        await poll("the event delivered", delivered)
    finally:
        await workers.close()
    async with engine.connect() as conn:
        assert (await conn.execute(select(t.leases))).all() == []  # released at shutdown


async def test_shutdown_finishes_the_batch_in_flight(replica: dict[Any, Any], aiohttp_server: Any) -> None:
    """Closing the workers while a POST is in flight waits for its answer and acknowledges the batch."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow_hook(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(status=200)

    receiver = web.Application()
    receiver.router.add_post("/hook", slow_hook)
    server = await aiohttp_server(receiver, host="127.0.0.1")
    await seed_sync(replica)
    await add_consumer(replica, id="hooks", kind="webhook", url=str(server.make_url("/hook")), secret=SECRET)
    await append(replica, [record_insert("003A")])
    workers = Workers(
        objects=replica[appkeys.OBJECTS], stream=replica[appkeys.STREAM], retention=86400, shutdown_timeout=10
    )
    await workers.tick()
    await asyncio.wait_for(arrived.wait(), 10)
    closing = asyncio.create_task(workers.close())
    await asyncio.sleep(0)  # a yield, not a wait: close() runs up to its first await (its drain begins)
    release.set()  # the receiver answers only after close() began
    await asyncio.wait_for(closing, 10)
    # Acknowledged: close() let the POST finish. Had it cancelled the worker, the event would still be pending.
    assert (await replica[appkeys.OBJECTS].consumer_view("hooks")).pending == 0


async def test_a_worker_that_cannot_run_marks_its_consumer_failing(
    replica: dict[Any, Any], aiohttp_server: Any, keyring: Keyring
) -> None:
    """A stored secret the signer cannot decode (written before validation got stricter) does not
    crash the worker unseen at every tick: the consumer reads ``failing`` with the reason."""
    receiver = web.Application()
    server = await aiohttp_server(receiver, host="127.0.0.1")
    await seed_sync(replica)
    await add_consumer(replica, id="hooks", kind="webhook", url=str(server.make_url("/hook")), secret=SECRET)
    bad = keyring.seal('{"secret": "whsec_%%%%not-base64%%%%"}')
    async with replica[appkeys.ENGINE].begin() as conn:
        await conn.execute(update(t.consumers).where(t.consumers.c.id == "hooks").values(settings_secret=bad))
    await append(replica, [record_insert("003A")])
    workers = Workers(
        objects=replica[appkeys.OBJECTS], stream=replica[appkeys.STREAM], retention=86400, shutdown_timeout=5
    )
    try:
        await workers.tick()

        async def failing() -> bool:
            view = await replica[appkeys.OBJECTS].consumer_view("hooks")
            return bool(view.status == "failing")

        await poll("the consumer marked failing", failing)
        view = await replica[appkeys.OBJECTS].consumer_view("hooks")
        assert view.status_detail is not None and view.status_detail.startswith("worker cannot run: Error")
        assert "not-base64" not in view.status_detail
        assert not workers.running["hooks"][1].done()  # still alive, retrying with backoff
    finally:
        await workers.close()


async def test_a_receiver_back_from_an_outage_gets_its_backlog_within_max_backoff(
    replica: dict[Any, Any], aiohttp_server: Any
) -> None:
    """Failures back off to ``max_backoff`` and no further (not to a tenth of ``max_retry_duration``):
    once the receiver answers 2xx again the backlog arrives within that bound, in order."""
    refusals = 0
    received: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        nonlocal refusals
        if refusals < 6:  # an outage of six attempts: without the cap, the sixth wait is up to 16 s
            refusals += 1
            return web.Response(status=503)
        received.extend(event["record"]["upstream_id"] for event in (await request.json())["data"])
        return web.Response(status=200)

    url = await _receiver(aiohttp_server, hook)
    await seed_sync(replica)
    await add_consumer(replica, id="hooks", kind="webhook", url=url, secret=SECRET, max_retry_duration=600,
                       max_backoff=1)  # fmt: skip
    await append(replica, [record_insert("003A"), record_insert("003B")])
    workers = Workers(objects=replica[appkeys.OBJECTS], stream=replica[appkeys.STREAM], retention=86400,
                      shutdown_timeout=5)  # fmt: skip
    started = time.monotonic()
    try:
        await workers.tick()

        async def delivered() -> bool:
            return len(received) == 2

        await poll("the backlog delivered", delivered, 20)
    finally:
        await workers.close()
    assert time.monotonic() - started <= 0.5 + 5 * 1 + 2  # six attempts, waits capped at 1 s, 2 s of slack
    assert received == ["003A", "003B"]


async def test_a_failing_webhook_says_why_until_it_recovers(replica: dict[Any, Any], aiohttp_server: Any) -> None:
    """From its first failed delivery the consumer reads ``failing`` with the last error, long before
    ``max_retry_duration`` (it read ``active`` for a day by default); a 2xx clears both."""
    down = True

    async def hook(request: web.Request) -> web.Response:
        return web.Response(status=503 if down else 200)

    url = await _receiver(aiohttp_server, hook)
    await seed_sync(replica)
    await add_consumer(replica, id="hooks", kind="webhook", url=url, secret=SECRET, max_retry_duration=86400,
                       max_backoff=1)  # fmt: skip
    await append(replica, [record_insert("003A")])
    workers = Workers(objects=replica[appkeys.OBJECTS], stream=replica[appkeys.STREAM], retention=86400,
                      shutdown_timeout=5)  # fmt: skip
    objects = replica[appkeys.OBJECTS]
    try:
        await workers.tick()

        async def failing() -> bool:
            view = await objects.consumer_view("hooks")
            return bool(view.status == "failing" and view.status_detail == "delivery failing: answered HTTP 503")

        await poll("the consumer failing with its reason", failing)
        down = False

        async def active() -> bool:
            view = await objects.consumer_view("hooks")
            return bool(view.status == "active" and view.status_detail is None and view.pending == 0)

        await poll("the consumer active again", active)
    finally:
        await workers.close()


async def _receiver(aiohttp_server: Any, hook: Any) -> str:
    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver, host="127.0.0.1")
    return str(server.make_url("/hook"))
