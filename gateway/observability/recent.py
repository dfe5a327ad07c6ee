"""What this replica did lately, for the web console: a ring of recent calls and per-credential rates.

- ``RecentCalls``: the last 1,000 proxied and mutation requests. A row holds only what is safe to
  show a person: the path WITHOUT its query string, never a header, a body or a secret. A deque
  makes recording O(1) and bounds memory, so the hot path pays one append.
- ``CallRates``: per credential, the upstream calls of each of the last two minutes' seconds (for
  the credential page's chart), the throttles (upstream 429/503) and the pacing waits of the last
  minute (for p50/p99), fed by the upstream client on every attempt, sync polls and mutation
  batches included. Waits are kept as at most ``WAIT_SAMPLES`` recent samples per credential, so
  under a flood the percentiles describe the most recent calls of that minute. A credential without
  calls for two minutes has nothing left to show and is forgotten at the next new credential's first
  call; at most ``MAX_CREDENTIALS`` are kept (the least recently called forgotten first).

Both are per process and in memory: another replica or a restart starts empty (the store keeps no
traffic log, on purpose: it would be a second copy of every request's metadata to protect).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from gateway.lru import LRU

RING_SIZE = 1000
HISTORY_SECONDS = 120
WINDOW_SECONDS = 60
WAIT_SAMPLES = 2048
MAX_CREDENTIALS = 10_000  # per-credential series kept (least recently called forgotten beyond)


class RecentCall(NamedTuple):
    """One row of the ring; a named tuple, immutable like a frozen dataclass but built in a third of
    the time (every proxied call makes one)."""

    at: float  # epoch seconds when the answer was complete
    request_id: str
    token: str
    credential: str
    method: str
    path: str  # without the query string
    status: int
    duration_ms: float
    wait_ms: float | None
    priority: str


def status_matches(status: int, wanted: str) -> bool:
    """``wanted`` is a status (``429``) or a class (``4xx``); anything else matches nothing."""
    wanted = wanted.strip().lower()
    if len(wanted) == 3 and wanted.endswith("xx") and wanted[0].isdigit():
        return status // 100 == int(wanted[0])
    return wanted.isdigit() and status == int(wanted)


class RecentCalls:
    """The last ``size`` calls of this process, newest last."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self._ring: deque[RecentCall] = deque(maxlen=size)

    def add(self, call: RecentCall) -> None:
        self._ring.append(call)

    def __len__(self) -> int:
        return len(self._ring)

    def rows(self, *, credential: str = "", status: str = "", token: str = "") -> list[RecentCall]:
        """Newest first, keeping the calls that match every filter given (empty = any)."""
        return [
            call
            for call in reversed(self._ring)
            if (not credential or call.credential == credential)
            and (not token or call.token == token)
            and (not status or status_matches(call.status, status))
        ]


class _Series:
    """One credential's seconds ``[second, calls, throttles, max wait ms]`` and recent wait samples."""

    __slots__ = ("seconds", "waits")

    def __init__(self) -> None:
        self.seconds: deque[list[float]] = deque(maxlen=HISTORY_SECONDS)
        self.waits: deque[tuple[float, float]] = deque(maxlen=WAIT_SAMPLES)

    def record(self, now: float, wait_ms: float, throttled: bool) -> None:
        second = float(int(now))
        if not self.seconds or self.seconds[-1][0] < second:
            self.seconds.append([second, 0, 0, 0.0])
        slot = self.seconds[-1]
        slot[1] += 1
        slot[2] += throttled
        slot[3] = max(slot[3], wait_ms)
        self.waits.append((now, wait_ms))

    def recent(self, now: float, seconds: float) -> Iterator[list[float]]:
        return (slot for slot in self.seconds if slot[0] > now - seconds - 1)


class CallRates:
    """Per-credential upstream call rates of this process (see the module docstring)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        # Least recently called first, so the series idle for longest are at the front.
        self._series: LRU[str, _Series] = LRU(MAX_CREDENTIALS)
        self._clock = clock

    def __len__(self) -> int:
        """Credentials with a series in memory."""
        return len(self._series)

    def record(self, credential_id: str, *, wait_seconds: float, status: int | None) -> None:
        """One upstream attempt; ``status`` None when no answer came (connection failure, timeout)."""
        now = self._clock()
        series = self._series.get(credential_id)
        if series is None:
            self._forget_idle(now)
            series = _Series()
            self._series.put(credential_id, series)
        series.record(now, wait_seconds * 1000, status in (429, 503))

    def _forget_idle(self, now: float) -> None:
        """Drop the series without a call in the last two minutes: nothing of them is shown any more."""
        while (oldest := self._series.oldest()) is not None and not _recent(oldest[1], now):
            self._series.pop(oldest[0])

    def active(self, credential_id: str) -> bool:
        """Whether the credential had calls through this process in the last two minutes."""
        series = self._series.peek(credential_id)
        return series is not None and _recent(series, self._clock())

    def summary(self, credential_id: str) -> dict[str, Any]:
        """Calls and longest wait (ms) of the last complete second; throttles and wait p50/p99 of the last minute."""
        series = self._series.peek(credential_id)
        if series is None:
            return {"calls_per_second": 0, "wait_last_ms": 0, "throttles": 0, "wait_p50_ms": None, "wait_p99_ms": None}
        now = self._clock()
        last = next((s for s in reversed(series.seconds) if s[0] == int(now) - 1), [0, 0, 0, 0.0])
        waits = sorted(w for at, w in series.waits if at > now - WINDOW_SECONDS)
        return {
            "calls_per_second": int(last[1]),
            "wait_last_ms": round(last[3], 1),
            "throttles": int(sum(s[2] for s in series.recent(now, WINDOW_SECONDS))),
            "wait_p50_ms": _percentile(waits, 0.50),
            "wait_p99_ms": _percentile(waits, 0.99),
        }

    def history(self, credential_id: str) -> list[list[float]]:
        """``[second, calls, max wait ms]`` for each second with calls in the last two minutes."""
        series = self._series.peek(credential_id)
        if series is None:
            return []
        return [[s[0], s[1], round(s[3], 1)] for s in series.recent(self._clock(), HISTORY_SECONDS)]


def _recent(series: _Series, now: float) -> bool:
    return bool(series.seconds) and series.seconds[-1][0] > now - HISTORY_SECONDS


def _percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list, rounded to 0.1 ms."""
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))
    return round(ordered[index], 1)


class Recent:
    """The two together, as the app holds them (one per process)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.calls = RecentCalls()
        self.rates = CallRates(clock=clock)
