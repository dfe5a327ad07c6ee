"""``options.max_share``: the part of the credential's rate a sync's own calls may take while others wait.

The sync's calls go through the credential's bucket like every call, at priority ``low``, so users'
calls are granted first anyway. When other calls are queued for the credential (other syncs, also
``low``, share the class fairly), the sync also spaces its calls to at most ``max_share`` of the
credential's rate; alone, it reads at the bucket's full pace. "Queued" is the bucket's queue as the
pacer describes it: this replica's with the local backend, every replica's with Redis (the shared
queue), so a sync on one replica yields to calls waiting on another.
"""

from __future__ import annotations

import asyncio
import time

from gateway.config import Config
from gateway.domain.objects import Credential
from gateway.pacing.api import Pacer
from gateway.pacing.limits import credential_limit

DEFAULT_MAX_SHARE = 0.5
MIN_SHARE = 0.01  # max_share 0 still lets the sync read, at 1% of the rate


class Share:
    """Spaces calls at least ``per / (rate * max_share)`` apart (a burst of one) when asked to."""

    def __init__(self) -> None:
        self._next = 0.0
        self._delay = 0.0

    @staticmethod
    def interval(config: Config, credential: Credential, max_share: float) -> float:
        limit = credential_limit(config, credential.provider, credential.rate_limit)
        return limit.per / (limit.rate * max(max_share, MIN_SHARE))

    def wait_if(self, crowded: bool, interval: float) -> None:
        """Plan the next call: spaced from the previous one when ``crowded``, else at once."""
        now = time.monotonic()
        start = max(now, self._next) if crowded else now
        self._next = start + interval
        self._delay = start - now

    async def pending(self) -> None:
        if self._delay > 0:
            await asyncio.sleep(self._delay)


async def crowded(pacer: Pacer, credential: Credential) -> bool:
    """Whether calls wait for the credential's bucket: in this process, or in Redis's shared queue."""
    return bool((await pacer.describe(credential)).get("queue_depth"))
