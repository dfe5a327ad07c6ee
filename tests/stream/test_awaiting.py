"""Read-your-writes: await_consumers returns when consumers acked, or names those still pending."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gateway.app import create_app
from gateway.http import appkeys
from gateway.stream.signals import Signal
from gateway.vault.crypto import Keyring
from tests.conftest import GatewayFactory, make_config
from tests.stream.helpers import ACCOUNTS, add_consumer, append, insert, seed_sync
from tests.support import poll


async def _ack_all_when_received(app: object, consumer_id: str) -> int:
    """A real pull consumer: long-poll, then ack what arrived."""
    queue = app[appkeys.STREAM].queue  # type: ignore[index]
    batch = await queue.receive(consumer_id, batch_size=10, visibility=30, wait=10)
    return int(await queue.ack(consumer_id, [d.ack_id for d in batch]))


async def test_await_returns_once_a_consumer_acks_from_another_task(make_gateway: GatewayFactory) -> None:
    """await_consumers returns [] soon after the consumer acknowledged the events."""
    gw = await make_gateway()
    await seed_sync(gw.app)
    await add_consumer(gw.app, id="reader", kind="pull")
    events = await append(gw.app, [insert("003A"), insert("003B")])
    gw.app[appkeys.STREAM].awaiter.recheck = 60  # only the post-commit signal can end the wait in time
    acker = asyncio.create_task(_ack_all_when_received(gw.app, "reader"))
    started = time.monotonic()
    pending = await gw.app[appkeys.STREAM].await_consumers(["reader"], [e.seq for e in events], 10)
    assert pending == []
    assert await acker == 2
    assert time.monotonic() - started < 5


async def test_await_times_out_naming_pending_consumers(make_gateway: GatewayFactory) -> None:
    """A consumer that never acks is reported pending after the timeout; a filtered-out one is done."""
    gw = await make_gateway()
    await seed_sync(gw.app)
    await add_consumer(gw.app, id="idle", kind="pull")
    await add_consumer(gw.app, id="accounts-only", kind="pull", collections=[ACCOUNTS])
    [event] = await append(gw.app, [insert("003C")])
    started = time.monotonic()
    pending = await gw.app[appkeys.STREAM].await_consumers(["accounts-only", "idle"], [event.seq], 0.3)
    assert pending == ["idle"]
    assert 0.25 < time.monotonic() - started < 10


async def test_an_ack_on_another_replica_wakes_the_waiter_through_notify(
    aiohttp_client: Any, keyring: Keyring, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL, an ack on replica A wakes a waiter on replica B without its fallback re-check."""
    first, second = [
        await aiohttp_client(create_app(make_config(pg_url, keyring), keyring=keyring, ops_on_main=True))
        for _ in range(2)
    ]
    await seed_sync(first.app)
    await add_consumer(first.app, id="reader", kind="pull")
    [event] = await append(first.app, [insert("003A")])
    waiter = second.app[appkeys.STREAM]
    await poll("replica B hears replica A's notifications", lambda: _heard(first.app, waiter.signals.acked))
    waiter.awaiter.recheck = 60  # only a notification can end the wait early
    sleeping = asyncio.Event()
    original = waiter.signals.acked.wait

    async def wait(ticket: asyncio.Event, seconds: float) -> bool:
        sleeping.set()
        return bool(await original(ticket, seconds))

    monkeypatch.setattr(waiter.signals.acked, "wait", wait)
    waiting = asyncio.create_task(waiter.await_consumers(["reader"], [event.seq], 30))
    await asyncio.wait_for(sleeping.wait(), 10)  # B found the event pending and sleeps on its signal
    queue = first.app[appkeys.STREAM].queue
    started = time.monotonic()
    [delivery] = await queue.receive("reader", batch_size=1, visibility=30, wait=5)
    assert await queue.ack("reader", [delivery.ack_id]) == 1
    assert await asyncio.wait_for(waiting, 10) == []
    assert time.monotonic() - started < 10


async def _heard(app: Any, acked: Signal) -> bool:
    """Announce an ack on ``app``'s replica; True once the other replica's signal fired (it LISTENs)."""
    ticket = acked.ticket()
    async with app[appkeys.STREAM].transaction() as tx:
        await tx.announce("ack")
    return await Signal.wait(ticket, 0.5)
