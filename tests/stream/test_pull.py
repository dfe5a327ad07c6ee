"""The delivery queue under concurrency: receivers on two gateways never share an event."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from gateway.app import create_app
from gateway.http import appkeys
from gateway.stream.delivery import DeliveryQueue
from gateway.vault.crypto import Keyring
from tests.conftest import GatewayFactory, make_config
from tests.stream.helpers import add_consumer, append, insert, seed_sync


async def _drain(queue: DeliveryQueue, seen: list[int]) -> None:
    while True:
        batch = await queue.claim("reader", batch_size=3, visibility=60)
        if not batch:
            return
        seen.extend(d.event.seq for d in batch)
        await asyncio.sleep(0)  # let the other receivers interleave


async def test_concurrent_receivers_on_two_replicas_never_get_the_same_event(
    make_gateway: GatewayFactory, aiohttp_client: Any, keyring: Keyring, store_url: str
) -> None:
    """Eight receivers over two gateways sharing one store split 120 events without overlap."""
    first = await make_gateway()
    second = await aiohttp_client(create_app(make_config(store_url, keyring), keyring=keyring, ops_on_main=True))
    await seed_sync(first.app)
    await add_consumer(first.app, id="reader", kind="pull")
    for start in range(0, 120, 40):
        await append(first.app, [insert(f"003{i}") for i in range(start, start + 40)])
    seen: list[int] = []
    queues = [app[appkeys.STREAM].queue for app in (first.app, second.app)]
    await asyncio.gather(*(_drain(queues[i % 2], seen) for i in range(8)))
    counts = Counter(seen)
    assert len(counts) == 120
    assert max(counts.values()) == 1
