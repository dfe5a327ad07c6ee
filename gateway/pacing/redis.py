"""Buckets shared by every replica, in Redis: one Lua script (pacing.lua) per batch of reservations.

- Atomic and clock-safe: the script reads the Redis server's ``TIME`` and applies bucket.py's math
  in one step, so replicas never race and their clocks never matter. The slot comes back as an
  offset from the server's now, which this replica adds to its own loop time.
- One round trip per batch, not per call: reservations queue per cluster hash tag; one sender per
  tag sends everything queued (up to ``MAX_BATCH``) in one script call and, while that call is in
  flight, the next batch gathers. Arrival order is kept because only one call per tag is in flight.
- ``NOSCRIPT`` (Redis restarted or failed over) is the only error retried: the script did not run.
  A timed-out call is never retried, since it may have reserved already and would count twice;
  it raises ``BackendError`` and the pacer applies ``on_backend_error``.
- Keys: ``<prefix>:{<tag>}:<bucket>`` (hash) and ``...:holes`` (sorted set); the ``{tag}`` puts all
  keys of one reservation in one cluster hash slot. Keys expire a minute after they stop mattering.
- Pauses another replica set are learned from every reservation's answer (``overtaken``).
- ``max_concurrency`` permits are leases in ``<prefix>:{<tag>}:cred:<id>:permits`` (permits.lua;
  waiting and renewal live in concurrency.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from gateway.config import PacingConfig
from gateway.pacing import bucket
from gateway.pacing.backend import BackendError, Refused, Reservation
from gateway.pacing.bucket import MAX_HOLES, US, Charge
from gateway.pacing.registry import BucketSpec

SCRIPT = resources.files("gateway.pacing").joinpath("pacing.lua").read_text(encoding="utf-8")
PERMITS_SCRIPT = resources.files("gateway.pacing").joinpath("permits.lua").read_text(encoding="utf-8")
T = TypeVar("T")
TIMEOUT = 1.0
MAX_BATCH = 256  # reservations per script call: keeps each call short, since Redis runs scripts one at a time


_Call = tuple[Sequence[BucketSpec], float, "asyncio.Future[Reservation | Refused]"]


class ClockOffset:
    """Loop time minus Redis time, as the smallest difference seen over the last one or two windows.

    A reply handled late (the process was descheduled, the loop was busy) shows a larger difference;
    taking that one would send every call of the batch late and squeeze the gap to other replicas'
    calls. The minimum is the least delayed sample; windows let it follow clock drift.
    """

    WINDOW = 30.0

    def __init__(self) -> None:
        self._current = self._previous = math.inf
        self._window_ends = -math.inf

    def observe(self, local: float, server: float) -> float:
        if local >= self._window_ends:
            self._previous, self._current = self._current, math.inf
            self._window_ends = local + self.WINDOW
        self._current = min(self._current, local - server)
        return min(self._current, self._previous)


class RedisBackend:
    name = "redis"

    def __init__(
        self, config: PacingConfig, *, client: aioredis.Redis | None = None, clock: Callable[[], int] | None = None
    ) -> None:
        """``clock`` (microseconds) replaces the server's ``TIME``: for tests comparing with bucket.py only."""
        self._clock = clock
        self._prefix = config.key_prefix
        self._client = client or aioredis.from_url(
            config.redis_url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, retry=Retry(NoBackoff(), 0)
        )
        self._script = self._client.register_script(SCRIPT)
        self._permits = self._client.register_script(PERMITS_SCRIPT)
        self._queues: dict[str, list[_Call]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._clock_offset = ClockOffset()
        self._paused: dict[str, int] = {}  # bucket key -> paused-until (server µs), as last seen
        self._background: set[asyncio.Task[None]] = set()

    def _keys(self, spec: BucketSpec) -> list[str]:
        base = f"{self._prefix}:{{{spec.tag}}}:{spec.key}"
        return [base, base + ":holes"]

    async def _run(self, keys: list[str], args: list[Any]) -> Any:
        """One call of the bucket script."""
        now = "" if self._clock is None else self._clock()
        return await _translated(self._script(keys=keys, args=[args[0], MAX_HOLES, now, *args[1:]]))

    async def reserve(self, buckets: Sequence[BucketSpec], max_wait: float) -> Reservation | Refused:
        tag = buckets[0].tag
        future: asyncio.Future[Reservation | Refused] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(tag, []).append((buckets, max_wait, future))
        if tag not in self._senders:
            self._senders[tag] = asyncio.get_running_loop().create_task(self._sender(tag))
        return await future

    async def _sender(self, tag: str) -> None:
        """Send the queued reservations of ``tag``, one script call at a time, oldest first.

        One call in flight per tag keeps arrival order in Redis (two connections could reorder two
        batches), and everything that queues meanwhile rides in the next call (group commit).
        """
        try:
            while queue := self._queues.get(tag):
                batch, self._queues[tag] = queue[:MAX_BATCH], queue[MAX_BATCH:]
                try:
                    await self._send(batch)
                except Exception as exc:  # whatever went wrong, no caller of this batch may wait forever
                    failure = exc if isinstance(exc, BackendError) else BackendError(f"redis: {type(exc).__name__}")
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(failure)
        finally:
            self._queues.pop(tag, None)
            del self._senders[tag]

    async def _send(self, batch: list[_Call]) -> None:
        keys: list[str] = []
        index: dict[str, int] = {}
        args: list[Any] = ["reserve", len(batch)]
        for buckets, max_wait, _ in batch:
            args += [int(max_wait * US), len(buckets)]
            for spec in buckets:
                if spec.key not in index:
                    index[spec.key] = len(keys) + 1
                    keys += self._keys(spec)
                limit = spec.limit.schedule
                args += [index[spec.key], limit.interval, limit.tolerance]
        reply = await self._run(keys, args)
        offset = self._clock_offset.observe(asyncio.get_running_loop().time(), int(reply[0]) / US)
        for (buckets, _, future), answer in zip(batch, reply[1:], strict=True):
            outcome = self._outcome(buckets, answer, offset)
            if not future.done():
                future.set_result(outcome)
            elif isinstance(outcome, Reservation):  # the caller left while the answer was on its way
                self._spawn(self.release(outcome))

    def _outcome(self, buckets: Sequence[BucketSpec], answer: list[int], offset: float) -> Reservation | Refused:
        if int(answer[0]) == 0:
            return Refused(retry_after=int(answer[1]) / US)
        slot, n = int(answer[1]), len(buckets)
        for spec, paused in zip(buckets, answer[2 + n :], strict=True):
            self._paused[spec.key] = max(self._paused.get(spec.key, 0), int(paused))
        charges = tuple(Charge(slot=slot, key=int(key)) for key in answer[2 : 2 + n])
        return Reservation(tuple(buckets), charges, deadline=slot / US + offset)

    async def release(self, reservation: Reservation) -> None:
        keys: list[str] = []
        args: list[Any] = ["release", len(reservation.buckets)]
        for spec, charge in zip(reservation.buckets, reservation.charges, strict=True):
            keys += self._keys(spec)
            args += [len(keys) - 1, spec.limit.schedule.interval, charge.slot, charge.key]
        await self._run(keys, args)

    async def pause(self, spec: BucketSpec, seconds: float) -> None:
        args = ["pause", 1, spec.limit.schedule.tolerance, int(seconds * US)]
        _, paused = await self._run(self._keys(spec), args)
        self._paused[spec.key] = max(self._paused.get(spec.key, 0), int(paused))

    def overtaken(self, reservation: Reservation) -> bool:
        return any(
            self._paused.get(spec.key, 0) > charge.slot
            for spec, charge in zip(reservation.buckets, reservation.charges, strict=True)
        )

    async def describe(self, spec: BucketSpec) -> dict[str, Any]:
        now, tat, paused = (int(v) for v in await self._run(self._keys(spec), ["state", 1]))
        state = bucket.BucketState(tat=tat, paused_until=paused)
        return {
            "tokens": round(bucket.tokens(state, spec.limit.schedule, now), 3),
            "paused_until": time.time() + (paused - now) / US if paused > now else None,
        }

    # --- max_concurrency leases (permits.lua) ------------------------------------------------------

    def permit_key(self, tag: str, credential_id: str) -> str:
        """The lease set of a credential, in the hash slot of its buckets."""
        return f"{self._prefix}:{{{tag}}}:cred:{credential_id}:permits"

    async def take_permit(self, key: str, permit: str, limit: int, ttl: float) -> bool:
        """Lease ``permit`` for ``ttl`` seconds if fewer than ``limit`` live leases exist."""
        return bool(await _translated(self._permits(keys=[key], args=["acquire", int(ttl * 1000), limit, permit])))

    async def renew_permits(self, key: str, permits: Sequence[str], ttl: float) -> set[str]:
        """Extend the leases that still exist to ``ttl`` from now; returns the lapsed ones."""
        lapsed = await _translated(self._permits(keys=[key], args=["renew", int(ttl * 1000), *permits]))
        return {p.decode() if isinstance(p, bytes) else str(p) for p in lapsed}

    async def drop_permit(self, key: str, permit: str) -> None:
        await _translated(self._client.zrem(key, permit))

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._client.ping(), TIMEOUT))
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        for task in [*self._senders.values(), *self._background]:
            with contextlib.suppress(Exception):
                await task
        await self._client.aclose()

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


async def _translated(call: Awaitable[T]) -> T:
    """Await a Redis call; foreign errors become ``BackendError`` here and nowhere else."""
    try:
        return await call
    except NoScriptError:  # Script.__call__ already reloaded once after NOSCRIPT; it vanished again
        raise BackendError("a pacing script vanished twice") from None
    except (RedisError, OSError) as exc:
        raise BackendError(f"redis: {type(exc).__name__}") from None
