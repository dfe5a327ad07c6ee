"""A webhook receiver down for minutes while changes keep coming: its backlog after it is back.

The consumer's workers (the gateway's own, on a real store) deliver to a receiver on loopback. The
receiver serves for a few seconds, then its port is closed (connections refused) for ``seconds``
while a producer appends ``RATE`` changes per second over ``RECORDS`` records; the producer stops
when the receiver comes back on the same port. Measured: how long after the return the first
delivery and the whole backlog arrive (the guarantee: within the consumer's ``max_backoff``, plus
``DELIVERY_MARGIN`` for the backlog's own POSTs), events lost, events delivered twice (nothing in
this run excuses a redelivery: every 2xx reached the gateway), and records whose changes arrived out
of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from gateway.config import StoreConfig
from gateway.http import appkeys
from gateway.observability.logs import configure_logging
from gateway.observability.metrics import Metrics
from gateway.sandbox import run_sandbox
from gateway.store.db import create_engine, migrate
from gateway.store.objects import Objects
from gateway.stream.consumers.workers import Workers
from gateway.stream.events import RecordChange
from gateway.stream.service import Stream
from gateway.vault.crypto import Keyring, generate_key
from tests.stream.helpers import add_consumer, append, seed_sync
from tests.support import free_port

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
RATE = 2.0  # changes appended per second, before and during the outage
RECORDS = 10  # records the changes rotate over (order is checked per record)
UP_BEFORE = 3.0  # seconds the receiver serves before the outage
DELIVERY_MARGIN = 5.0  # seconds for the backlog's POSTs themselves, on a busy machine


@dataclass
class Receiver:
    """What the receiver accepted (answered 200 to): event seqs, and each record's change numbers in order."""

    seqs: Counter[int] = field(default_factory=Counter)
    changes: dict[str, list[int]] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        return app

    async def hook(self, request: web.Request) -> web.Response:
        for event in (await request.json())["data"]:
            self.seqs[event["seq"]] += 1
            record = event["record"]
            self.changes.setdefault(record["upstream_id"], []).append(record["data"]["n"])
        self.arrivals.append(time.monotonic())
        return web.Response(status=200)


async def outage(store_url: str, seconds: float, max_backoff: float) -> dict[str, Any]:
    """Run the outage on the store at ``store_url``; the table's row."""
    configure_logging(level="error")  # the retries' warnings are the expected course of an outage
    engine = create_engine(StoreConfig(url=store_url))
    await migrate(engine)
    replica: dict[Any, Any] = {
        appkeys.ENGINE: engine,
        appkeys.OBJECTS: Objects(engine, Keyring.parse(generate_key("bench"))),
        appkeys.STREAM: Stream(engine, Metrics()),
    }
    receiver, port = Receiver(), free_port()
    await seed_sync(replica)
    url = f"http://127.0.0.1:{port}/hook"
    await add_consumer(replica, id="hooks", kind="webhook", url=url, secret=SECRET, max_backoff=max_backoff)
    workers = Workers(
        objects=replica[appkeys.OBJECTS], stream=replica[appkeys.STREAM], retention=86400, shutdown_timeout=5
    )
    appended: list[int] = []
    stop = asyncio.Event()
    try:
        await workers.tick()  # starts the consumer's worker (the app ticks every few seconds; once is enough)
        producer = asyncio.create_task(_produce(replica, appended, stop))
        async with run_sandbox(receiver.app(), port=port):
            await asyncio.sleep(UP_BEFORE)  # the scenario's timeline, not a wait for a condition
        await asyncio.sleep(seconds)  # the receiver is down: its port refuses connections
        async with run_sandbox(receiver.app(), port=port):
            back = time.monotonic()
            before_return = set(receiver.seqs)
            stop.set()
            await producer
            last = set(appended)
            deadline = back + 2 * max_backoff + 60
            while not last <= set(receiver.seqs) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)  # poll interval while the backlog arrives
            done = time.monotonic()
    finally:
        stop.set()
        await workers.close()
        await engine.dispose()
    lost = len(last - set(receiver.seqs))
    after = [t - back for t in receiver.arrivals if t >= back]
    backlog_seconds = done - back
    return {
        "outage_seconds": seconds, "max_backoff": max_backoff, "events_appended": len(appended),
        "events_in_backlog": len(last - before_return),
        "first_delivery_after_return_s": round(min(after, default=float("nan")), 1),
        "backlog_complete_after_return_s": round(backlog_seconds, 1),
        "within_max_backoff": not lost and backlog_seconds <= max_backoff + DELIVERY_MARGIN,
        "lost": lost, "duplicates": sum(n - 1 for n in receiver.seqs.values() if n > 1),
        "records_out_of_order": sum(1 for numbers in receiver.changes.values() if not _ascending(numbers)),
    }  # fmt: skip


async def _produce(replica: dict[Any, Any], appended: list[int], stop: asyncio.Event) -> None:
    """One change every 1/``RATE`` s, round-robin over the records, each carrying its change number."""
    n = 0
    while not stop.is_set():
        record = f"rec-{n % RECORDS}"
        change = RecordChange(record, "update" if n >= RECORDS else "insert", {"Id": record, "n": n})
        [event] = await append(replica, [change])
        appended.append(event.seq)
        n += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / RATE)


def _ascending(numbers: list[int]) -> bool:
    """Whether a record's changes first arrived in the order they were made (redeliveries aside)."""
    first = list(dict.fromkeys(numbers))
    return first == sorted(first)
