"""Live updates: one producer per process, server-sent events to every open console.

The state is built ONCE per second however many consoles are open, and only while one is; each
console's stream writes the shared, once-encoded event. Costs stay flat with many credentials:

- Refreshed every second: credentials with traffic through this process in the last two minutes,
  with calls queued or a pause at the last look, and those a credential page is watching. The rest
  (idle here) are refreshed in turn, each at least every ``SWEEP`` seconds: with the Redis backend
  another replica's traffic on them shows up that late at worst.
- A console gets the whole state once, then only the rows that changed (a console that missed an
  event, being slow, gets the whole state again: its queue holds one event, never a backlog).
- The credential list is re-read from the store only when it changed (``state.CredentialList``).

Shutdown ends every stream, so a drain is not held up by open consoles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.console.auth import SESSION_ID, page, secure_headers
from gateway.console.keys import SERVICES, SESSIONS
from gateway.console.state import CREDENTIALS, credential_row

TICK = 1.0
SWEEP = 5  # ticks: an idle credential's row is at most this many seconds old
RECHECK_SESSION = 10.0  # seconds between checks that an open stream's session is still valid
LIVE_FIELDS = (
    "tokens",
    "queue_depth",
    "queues",
    "paused_until",
    "limit_per_second",
    "calls_per_second",
    "wait_last_ms",
    "throttles",
    "wait_p50_ms",
    "wait_p99_ms",
)
Snapshot = dict[str, dict[str, Any]]


class Tick:
    """One second's state and what changed since the previous tick, each encoding made at most once."""

    def __init__(self, seq: int, snapshot: Snapshot, changed: Snapshot) -> None:
        self.seq = seq
        self.at = time.time()
        self._snapshot = snapshot
        self._changed = changed
        self._encoded: dict[tuple[str, bool], bytes] = {}

    def event(self, credential_id: str, *, whole: bool) -> bytes:
        """The SSE event for the overview (``credential_id`` empty) or one credential's page.

        ``whole``: every row (a console's first event, or after it missed one); else the changed rows.
        """
        data = self._encoded.get((credential_id, whole))
        if data is None:
            body: dict[str, Any] = {"at": self.at}
            if credential_id:
                body["credential"] = self._snapshot.get(credential_id)
            else:
                body["credentials"] = self._snapshot if whole else self._changed
            data = self._encoded[(credential_id, whole)] = f"event: state\ndata: {json.dumps(body)}\n\n".encode()
        return data


class Live:
    """The producer and its subscribers; ``LIVE`` in the app holds the process's one instance."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._subscribers: set[asyncio.Queue[Tick | None]] = set()
        self._watched: Counter[str] = Counter()  # credential pages open, by credential id
        self._task: asyncio.Task[None] | None = None
        self._state: Snapshot = {}
        self._seq = 0
        self._closed = False

    def subscribe(self, credential_id: str = "") -> asyncio.Queue[Tick | None]:
        queue: asyncio.Queue[Tick | None] = asyncio.Queue(maxsize=1)
        self._subscribers.add(queue)
        if credential_id:
            self._watched[credential_id] += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._produce())
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Tick | None], credential_id: str = "") -> None:
        self._subscribers.discard(queue)
        if credential_id:
            self._watched[credential_id] -= 1
            if self._watched[credential_id] <= 0:
                del self._watched[credential_id]

    async def close(self, _app: web.Application | None = None) -> None:
        """On shutdown: end every open stream, stop producing."""
        self._closed = True
        for queue in self._subscribers:
            _offer(queue, None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def tick(self) -> Tick:
        """Refresh the rows due (see the module docstring) and say which changed."""
        credentials = await self._app[CREDENTIALS].all()
        self._seq += 1
        services = self._app[SERVICES]
        rates = services.recent.rates
        state: Snapshot = {}
        changed: Snapshot = {}
        for index, credential in enumerate(credentials):
            old = self._state.get(credential.id)
            if old is None or (index + self._seq) % SWEEP == 0 or self._busy(credential.id, old, rates.active):
                row = await credential_row(services, credential)
                new = {name: row[name] for name in LIVE_FIELDS}
                if new != old:
                    changed[credential.id] = new
                old = new
            state[credential.id] = old
        self._state = state
        return Tick(self._seq, state, changed)

    def _busy(self, credential_id: str, row: dict[str, Any], active: Callable[[str], bool]) -> bool:
        paused = row["paused_until"] is not None and row["paused_until"] > time.time()
        return bool(row["queue_depth"] or paused or credential_id in self._watched or active(credential_id))

    async def _produce(self) -> None:
        loop = asyncio.get_running_loop()
        while self._subscribers and not self._closed:
            started = loop.time()
            tick = await self.tick()
            for queue in list(self._subscribers):
                _offer(queue, tick)
            await asyncio.sleep(max(0.0, TICK - (loop.time() - started)))


def _offer(queue: asyncio.Queue[Tick | None], item: Tick | None) -> None:
    """Replace what a slow reader has not taken yet: it wants the newest state, not a backlog."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


LIVE = web.AppKey("console_live", Live)


@page
async def events(request: web.Request) -> web.StreamResponse:
    """``text/event-stream`` of state snapshots, about one credential with ``?credential=<id>``."""
    credential_id = request.query.get("credential", "")[:128]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    secure_headers(response)
    await response.prepare(request)
    live = request.app[LIVE]
    queue = live.subscribe(credential_id)
    checked, last = time.monotonic(), -1
    try:
        while (tick := await queue.get()) is not None:
            if time.monotonic() - checked > RECHECK_SESSION:  # signed out or token revoked: stop
                if await request.app[SESSIONS].check(request[SESSION_ID]) is None:
                    break
                checked = time.monotonic()
            await response.write(tick.event(credential_id, whole=tick.seq != last + 1))
            last = tick.seq
    except ConnectionError:
        pass  # the console was closed
    finally:
        live.unsubscribe(queue, credential_id)
    return response
