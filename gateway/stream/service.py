"""``Stream``: the app's one handle on the stream, kept in ``app[appkeys.STREAM]``.

It owns the wake-up signals and exposes the transaction every stream write runs in (appends of
syncs and mutations, acks), the delivery queue (pull consumers and workers) and the read-your-writes
await (``await_consumers``) to the HTTP views, the sync pollers and the mutation service.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.observability.metrics import Metrics
from gateway.stream.awaiting import Awaiter
from gateway.stream.delivery import DeliveryQueue
from gateway.stream.signals import Signals, Transaction


class Stream:
    def __init__(self, engine: AsyncEngine, metrics: Metrics) -> None:
        self.signals = Signals(engine)
        self.queue = DeliveryQueue(engine, self.signals, metrics)
        self.awaiter = Awaiter(engine, self.signals, metrics)

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """The store transaction to append in (``events.append_changes``); waiters wake once it commits."""
        return self.signals.transaction()

    async def await_consumers(self, consumer_ids: Sequence[str], seqs: Sequence[int], timeout: float) -> list[str]:  # noqa: ASYNC109 (agreed signature)
        """Ids of ``consumer_ids`` still pending on ``seqs`` after at most ``timeout`` s; [] = all done."""
        return await self.awaiter.await_consumers(consumer_ids, seqs, timeout)
