"""``Stream``: the app's one handle on the stream, kept in ``app[appkeys.STREAM]``.

It owns the wake-up signals and exposes the delivery queue (pull consumers and workers) and the
read-your-writes await (``await_consumers``) to the HTTP views and the mutation service.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.observability.metrics import Metrics
from gateway.stream.awaiting import Awaiter
from gateway.stream.delivery import DeliveryQueue
from gateway.stream.signals import Signals


class Stream:
    def __init__(self, engine: AsyncEngine, metrics: Metrics) -> None:
        self.signals = Signals(engine)
        self.queue = DeliveryQueue(engine, self.signals, metrics)
        self.awaiter = Awaiter(engine, self.signals, metrics)

    async def await_consumers(self, consumer_ids: Sequence[str], seqs: Sequence[int], timeout: float) -> list[str]:  # noqa: ASYNC109 (agreed signature)
        """Ids of ``consumer_ids`` still pending on ``seqs`` after at most ``timeout`` s; [] = all done."""
        return await self.awaiter.await_consumers(consumer_ids, seqs, timeout)
