"""Backoff for clients that keep presenting bad tokens: after ``auth_max_failures`` within
``auth_failure_window`` seconds, an address gets 429 with ``Retry-After`` for a pause that doubles
with every further round (1 s, 2 s, 4 s ... up to ``auth_max_backoff``).

Tokens carry 32 random bytes, so guessing one is hopeless; the backoff keeps a flood of guesses
from costing a store lookup each and shows up as 429s an operator can alert on. The table is per
process and bounded (the addresses heard from least recently dropped first); an address that
authenticates is forgotten.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.errors import RateLimited
from gateway.lru import LRU

TABLE_SIZE = 10_000


@dataclass
class _Record:
    window_start: float
    failures: int = 0
    strikes: int = 0
    blocked_until: float = 0.0


class AuthThrottle:
    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        max_backoff: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``max_failures`` 0 turns the backoff off."""
        self.max_failures, self.window, self.max_backoff = max_failures, window, max_backoff
        self._clock = clock
        self._records: LRU[str, _Record] = LRU(TABLE_SIZE)

    def check(self, address: str) -> None:
        """``RateLimited`` while ``address`` serves its pause."""
        record = self._records.peek(address)
        if record is None:
            return
        wait = record.blocked_until - self._clock()
        if wait > 0:
            raise RateLimited("too many bad tokens from this address; wait before trying again", retry_after=wait)

    def failed(self, address: str) -> None:
        if not self.max_failures:
            return
        now = self._clock()
        record = self._records.get(address)
        if record is None:
            record = _Record(window_start=now)
            self._records.put(address, record)
        if now - record.window_start > self.window:
            record.window_start, record.failures = now, 0
        record.failures += 1
        if record.failures >= self.max_failures:
            record.strikes += 1
            record.failures = 0
            record.blocked_until = now + min(self.max_backoff, 2.0 ** (record.strikes - 1))

    def succeeded(self, address: str) -> None:
        self._records.pop(address)
