"""Buckets and their queues shared by every replica, in Redis (pacing.lua).

- One queue per home bucket, in Redis: a sorted set per priority class, scored by the call's
  virtual start tag (scheduler.py's weighted fair queuing), ties by arrival sequence. Every grant
  is made by the script, atomically, on the Redis server's clock (``TIME``): the head of the highest
  non-empty class takes the next slot once bucket.py's GCRA says it is due. Whichever replica polls
  first makes the grant; it lands in the owner's collection hash, and the owner picks it up at its
  own next poll. So the order (class, fair share, FIFO per tenant) is one order across replicas, and
  the bound is the GCRA's, as if one process granted every slot. A test runs the script and
  bucket.py + scheduler.py side by side on a fake clock and compares every grant.
- Arrivals: granted at once when nobody waits and the bucket conforms; refused before queueing when
  the estimate (calls ahead times the interval, plus the time to the next slot) exceeds
  ``max_wait``; queued otherwise. They travel in batches: one sender per cluster hash tag sends all
  arrivals queued meanwhile in one script call (group commit), one call in flight per tag, so Redis
  sees them in arrival order.
- Waiting: shared_queue.py, one poller per bucket per replica. Slots are granted up to
  ``LOOKAHEAD`` before they come and each is due at its slot (server time plus the smallest clock
  offset seen), so a poll's round trip never makes a call late. A call's place and the call are
  kept apart: a replica's interchangeable calls (same buckets, cost, class, tenant, permits) form a
  lane, and each slot granted to a place of the lane goes, when it comes, to the lane's first call.
- Each queued call's own buckets (its windows, rules, cost) are kept beside its place, so whoever
  grants it charges exactly those (any replica's poll may grant any place).
- Why the bound holds: every slot is the GCRA's, granted by the script, and a call is sent at a slot
  of its own lane (same buckets and cost, so the same charges) no later than its buckets' headroom
  absorbs (``BucketLimit.lateness``). A slot this replica wakes up for later than that (a stalled
  process) is not sent: it is given back and taken out of the GCRA's history exactly, as far as
  the charges after it allow (pacing.lua, "Charge keys and refunds"), so the bucket's state is
  never below the GCRA over the slots sent, and the capacity of a slot nobody sent goes to the next
  grants instead of being lost.
- Why the order holds: the script grants in one order for every replica (class, fair share, FIFO
  per tenant); within a replica the calls of a lane take its slots in arrival order whichever place
  each slot was granted to, and a place given back rejoins at its old start tag (``Place``), the
  head again, while the lane's first call waits for the next slot that comes on time.
- A replica that stalls or dies with calls queued: each script call tells its replica when to poll
  next (``H:s``); the places of a replica more than ``ABSENT`` (50 ms) past that are passed over,
  in place, and the slots go to the next places of replicas that poll (granted to a replica that
  cannot collect them, they would be lost: nobody gives back a grant it never saw). Each queue also
  holds a lease per replica (``H:r``), renewed by every enter and poll of that replica (at least
  every third of ``lease_ttl``); past it, the script drops that replica's places as it meets them.
  So a stalled or dead replica's places hold nobody back and never break the bound (every grant is
  a GCRA slot) or the order of the others; a stalled replica's calls are first again once it polls.
- ``NOSCRIPT`` (Redis restarted or failed over) is the only error retried: the script did not run.
  A timed-out call is never retried, since it may have acted already; it raises ``BackendError`` and
  the pacer applies ``on_backend_error`` (waiting calls fail over to the in-process queue).
- Keys: ``<prefix>:{<tag>}:<bucket>`` (hash) and the queue keys hanging off a home bucket's name;
  the ``{tag}`` puts all keys of one call in one cluster hash slot. Keys expire a minute after they
  stop mattering (queue keys: a minute after the last replica's lease).
- ``max_concurrency`` permits are leases in ``<prefix>:{<tag>}:cred:<id>:permits``, granted by the
  script together with the slot, to the head of the queue only: permits follow the queue's order
  (class, fair share, FIFO) across replicas. A head waiting for a permit blocks its queue (strict
  order); pollers look again every ``PERMIT_POLL``, and at once when this replica ends a lease.
  Renewal lives in concurrency.py (permits.lua).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from gateway.config import PacingConfig
from gateway.pacing import bucket
from gateway.pacing.backend import BackendError, Permit, Place, Refused, Reservation
from gateway.pacing.bucket import US, Charge
from gateway.pacing.registry import BucketSpec, credential_key
from gateway.pacing.scheduler import PRIORITIES, Share, step
from gateway.pacing.shared_queue import Entered, Granted, Lane, Polled, Queued, SharedQueue

SCRIPT = resources.files("gateway.pacing").joinpath("pacing.lua").read_text(encoding="utf-8")
PERMITS_SCRIPT = resources.files("gateway.pacing").joinpath("permits.lua").read_text(encoding="utf-8")
T = TypeVar("T")
TIMEOUT = 1.0
LEASE_TTL = 30.0  # how long a replica's queued calls and concurrency permits outlive it
SWEEP_FROM = 1024  # queues held before the idle ones are forgotten (then twice those left)
LOOKAHEAD = 20_000  # µs: slots are granted this long before they come, so a poll's round trip makes no call late
MAX_BATCH = 32  # calls per script call: each grant in a call is as late as the whole call is long
# How far in the past a queued call's slot may lie (bucket.head_slot): none. Grants are made ahead,
# so a past slot only follows a stall, and would reach its caller later than the jitter headroom:
# the pacer would give it back (a lost slot) where a slot at the server's now is sent on time.
CATCHUP = 0


# A lane's key (shared_queue.py): the call's buckets, share and permits (lease set, max_concurrency).
LaneKey = tuple[tuple[BucketSpec, ...], Share, tuple[str, int] | None]


@dataclass(eq=False)
class _Call:
    """One place on its way to the script (an arrival, or a late grant rejoining at ``place``);
    ``deliver`` takes what the script made of it."""

    buckets: tuple[BucketSpec, ...]
    share: Share
    max_wait: float
    place: Place | None
    permits: tuple[str, int] | None
    deliver: Callable[[Entered], None]


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
        self,
        config: PacingConfig,
        *,
        client: aioredis.Redis | None = None,
        clock: Callable[[], int] | None = None,
        lease_ttl: float = LEASE_TTL,
    ) -> None:
        """``clock`` (microseconds) replaces the server's ``TIME``: for tests comparing with Python only.
        ``lease_ttl``: how long the queued calls of a replica that stopped polling keep their places."""
        self._clock = clock
        self._prefix = config.key_prefix
        self._client = client or aioredis.from_url(
            config.redis_url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, retry=Retry(NoBackoff(), 0)
        )
        self._script = self._client.register_script(SCRIPT)
        self._permits = self._client.register_script(PERMITS_SCRIPT)
        self._replica = uuid.uuid4().hex[:16]
        self._lease = int(lease_ttl * US)
        self._renew_every = lease_ttl / 3
        self._calls: dict[str, list[_Call]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self._releases: dict[str, list[tuple[Reservation, asyncio.Future[None]]]] = {}
        self._releasers: dict[str, asyncio.Task[None]] = {}
        self._clock_offset = ClockOffset()
        self._tickets = itertools.count()  # callers' arrival order (shared_queue.py's ``again``)
        self._queues: dict[str, SharedQueue[LaneKey]] = {}  # home bucket -> this replica's calls queued there
        self._sweep_at = SWEEP_FROM
        self._permit_queues: dict[str, set[SharedQueue[LaneKey]]] = {}  # lease set -> queues whose calls need one
        self._background: set[asyncio.Task[None]] = set()

    def _key(self, spec: BucketSpec) -> str:
        return f"{self._prefix}:{{{spec.tag}}}:{spec.key}"

    async def _run(self, keys: list[str], args: list[Any]) -> Any:
        """One call of the bucket script."""
        now = "" if self._clock is None else self._clock()
        return await _translated(self._script(keys=keys, args=[args[0], now, *args[1:]]))

    def _offset(self, server_now: int) -> float:
        return self._clock_offset.observe(asyncio.get_running_loop().time(), server_now / US)

    async def wait_turn(
        self,
        buckets: Sequence[BucketSpec],
        share: Share,
        max_wait: float,
        permits: tuple[str, int] | None = None,
    ) -> Reservation | Refused:
        """A place in the home bucket's shared queue, and the slot of the call's lane when it comes
        (shared_queue.py), or a refusal (the wait would exceed ``max_wait``). ``permits``: the
        credential's lease set and ``max_concurrency``; the grant then holds a permit."""
        loop = asyncio.get_running_loop()
        ordered = tuple(buckets)
        queue = self._queue(ordered, permits)
        maker = partial(_reservation, ordered, None if permits is None else permits[0])
        key: LaneKey = (ordered, share, permits)
        lane = queue.lane(key, maker, min(spec.limit.lateness for spec in ordered))
        deadline = loop.time() + max_wait
        ticket = next(self._tickets)
        turn = queue.join(lane, deadline)
        self._enter(queue, lane, max_wait, None)
        while True:
            try:
                outcome = await turn
            except asyncio.CancelledError:
                if turn.cancelled():
                    queue.leave(lane, turn)
                elif isinstance(outcome := turn.result(), Reservation):  # handed over, then cancelled
                    self._release_soon(outcome)
                raise
            if isinstance(outcome, Refused):
                return outcome
            late = loop.time() - outcome.deadline > lane.late
            queue = self._queue(ordered, permits)  # the lane, even the queue, may have been forgotten meanwhile
            if not late and not queue.overtaking(key, ticket):
                return outcome
            lane = queue.lane(key, maker, lane.late)
            turn = (queue.again if late else queue.hand_over)(lane, outcome, deadline, ticket)

    def _enter(self, queue: SharedQueue[LaneKey], lane: Lane[LaneKey], max_wait: float, place: Place | None) -> None:
        """Send a place of ``lane`` to the script with the next batch of its hash tag."""
        buckets, share, permits = lane.key
        tag = buckets[0].tag
        self._calls.setdefault(tag, []).append(
            _Call(buckets, share, max_wait, place, permits, partial(queue.entered, lane))
        )
        if tag not in self._senders:
            self._senders[tag] = asyncio.get_running_loop().create_task(self._sender(tag))

    def _rejoin(self, lane: Lane[LaneKey], granted: Granted) -> None:
        self._spawn(self._give_back_and_rejoin(lane, granted))

    async def _give_back_and_rejoin(self, lane: Lane[LaneKey], granted: Granted) -> None:
        """A grant woken too late: its slot goes back to the bucket first (rewound or refunded, see
        pacing.lua), then its place rejoins the queue at its old start tag, the head again. Its
        ``max_concurrency`` lease is ended by that rejoin, in the same script call: ended before,
        the permit would go to the call behind it meanwhile (a poll of any replica grants it)."""
        queue = self._queue(lane.key[0])
        try:
            await self.release(replace(lane.maker(granted), permit=None))
        except BackendError as exc:
            queue.entered(lane, exc)
            return
        self._enter(queue, lane, lane.budget(asyncio.get_running_loop().time()), granted.place)

    def _queue(self, buckets: tuple[BucketSpec, ...], permits: tuple[str, int] | None = None) -> SharedQueue[LaneKey]:
        """The home bucket's queue; with ``permits``, nudged when this replica ends one of those leases."""
        home = self._key(buckets[0])
        queue = self._queues.get(home)
        if queue is None:
            if len(self._queues) >= self._sweep_at:
                self._sweep()
            queue = self._queues[home] = SharedQueue(
                partial(self._poll, buckets), self._release_soon, self._rejoin, self._renew_every
            )
        if permits is not None:
            self._permit_queues.setdefault(permits[0], set()).add(queue)
        return queue

    def _sweep(self) -> None:
        """Forget the queues of buckets where this replica has no call (the queue itself is in Redis),
        so memory follows the buckets in use, not every bucket ever queued on (as ``LocalBackend``)."""
        idle = {home: queue for home, queue in self._queues.items() if queue.idle}
        for home in idle:
            del self._queues[home]
        dropped = set(idle.values())
        for key, queues in list(self._permit_queues.items()):
            queues -= dropped
            if not queues:
                del self._permit_queues[key]
        self._sweep_at = max(SWEEP_FROM, 2 * len(self._queues))

    async def _sender(self, tag: str) -> None:
        """Send the queued arrivals of ``tag``, one script call at a time, oldest first.

        One call in flight per tag keeps arrival order in Redis (two connections could reorder two
        batches), and everything that queues meanwhile rides in the next call (group commit).
        """
        try:
            while calls := self._calls.get(tag):
                batch, self._calls[tag] = calls[:MAX_BATCH], calls[MAX_BATCH:]
                try:
                    await self._send(batch)
                except Exception as exc:  # whatever went wrong, no caller of this batch may wait forever
                    failure = exc if isinstance(exc, BackendError) else BackendError(f"redis: {type(exc).__name__}")
                    for call in batch:
                        call.deliver(failure)
        finally:
            self._calls.pop(tag, None)
            del self._senders[tag]

    async def _send(self, batch: list[_Call]) -> None:
        keys: list[str] = []
        index: dict[str, int] = {}
        args: list[Any] = ["enter", len(batch), CATCHUP, LOOKAHEAD, self._replica, self._lease]
        for call in batch:
            args += [self._index(call.buckets[0], keys, index)]
            args += self._bucket_args(call.buckets, keys, index)
            args += [call.share.cls, call.share.tenant, step(call.share.weight), int(call.max_wait * US)]
            args += ["", 0] if call.place is None else [call.place.member, call.place.tag]
            args += [0, 0] if call.permits is None else [_indexed(call.permits[0], keys, index), call.permits[1]]
        reply = await self._run(keys, args)
        offset = self._offset(int(reply[0]))
        for call, answer in zip(batch, reply[1:], strict=True):
            call.deliver(_outcome(answer, offset))

    def _index(self, spec: BucketSpec, keys: list[str], index: dict[str, int]) -> int:
        return _indexed(self._key(spec), keys, index)

    def _bucket_args(self, buckets: Sequence[BucketSpec], keys: list[str], index: dict[str, int]) -> list[int]:
        args = [len(buckets)]
        for spec in buckets:
            limit = spec.schedule
            args += [self._index(spec, keys, index), limit.interval, limit.tolerance]
        return args

    async def _poll(self, buckets: tuple[BucketSpec, ...], leaving: list[str]) -> Polled:
        """One poll of a home bucket's queue for this replica (see shared_queue.py)."""
        args = ["poll", 1, CATCHUP, LOOKAHEAD, self._replica, self._lease, *leaving]
        now, wake, granted, *depth = await self._run([self._key(buckets[0])], args)
        offset = self._offset(int(now))
        reservations = {}
        for member, text in zip(granted[::2], granted[1::2], strict=True):
            tag, slot, *tats = (int(v) for v in _text(text).split(","))
            charges = tuple(Charge(slot=slot, key=tat) for tat in tats)
            place = Place(_text(member), tag)
            reservations[place.member] = Granted(place, charges, deadline=slot / US + offset)
        interval = max(spec.schedule.interval for spec in buckets)
        return Polled(
            granted=reservations,
            wake=int(wake) / US + offset if int(wake) else math.inf,
            retry_after=max(1, sum(int(d) for d in depth)) * interval / US,
        )

    async def release(self, reservation: Reservation) -> None:
        """Give a slot (and its permit) back. Give-backs of one tag travel together, one script call
        in flight per tag (as arrivals do): a stalled process may give back hundreds of late grants
        at once, and one connection each would exhaust the pool."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tag = reservation.buckets[0].tag
        self._releases.setdefault(tag, []).append((reservation, future))
        if tag not in self._releasers:
            self._releasers[tag] = asyncio.get_running_loop().create_task(self._releaser(tag))
        await asyncio.shield(future)
        if reservation.permit is not None:
            await self.drop_permit(reservation.permit)

    async def _releaser(self, tag: str) -> None:
        try:
            while pending := self._releases.get(tag):
                batch, self._releases[tag] = pending[:MAX_BATCH], pending[MAX_BATCH:]
                try:
                    await self._send_releases([reservation for reservation, _ in batch])
                except Exception as exc:  # nobody giving a slot back may wait forever
                    failure = exc if isinstance(exc, BackendError) else BackendError(f"redis: {type(exc).__name__}")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(failure)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._releases.pop(tag, None)
            del self._releasers[tag]

    async def _send_releases(self, reservations: list[Reservation]) -> None:
        """One script call; the newest slot first, so each rewind can make the one before it the tail."""
        keys: list[str] = []
        index: dict[str, int] = {}
        triples: list[int] = []
        for reservation in sorted(reservations, key=lambda r: r.charges[0].slot, reverse=True):
            for spec, charge in zip(reservation.buckets, reservation.charges, strict=True):
                triples += [self._index(spec, keys, index), spec.schedule.interval, charge.key]
        await self._run(keys, ["release", len(triples) // 3, *triples])

    def _release_soon(self, reservation: Reservation) -> None:
        self._spawn(self.release(reservation))

    async def pause(self, spec: BucketSpec, seconds: float) -> None:
        await self._run([self._key(spec)], ["pause", 1, spec.limit.schedule.tolerance, int(seconds * US)])

    async def describe(self, spec: BucketSpec) -> dict[str, Any]:
        now, tat, paused, *depth = (int(v) for v in await self._run([self._key(spec)], ["state", 1]))
        state = bucket.BucketState(tat=tat, paused_until=paused)
        return {
            "tokens": round(bucket.tokens(state, spec.limit.schedule, now), 3),
            "paused_until": time.time() + (paused - now) / US if paused > now else None,
            "queued": dict(zip(PRIORITIES, depth, strict=True)),
        }

    # --- max_concurrency leases (permits.lua) ------------------------------------------------------

    def permit_key(self, tag: str, credential_id: str) -> str:
        """The lease set of a credential, in the hash slot of its buckets."""
        return f"{self._prefix}:{{{tag}}}:{credential_key(credential_id)}:permits"

    async def renew_permits(self, key: str, permits: Sequence[str], ttl: float) -> set[str]:
        """Extend the leases that still exist to ``ttl`` from now; returns the lapsed ones."""
        lapsed = await _translated(self._permits(keys=[key], args=["renew", int(ttl * 1000), *permits]))
        return {p.decode() if isinstance(p, bytes) else str(p) for p in lapsed}

    async def drop_permit(self, permit: Permit) -> None:
        """End a lease; this replica's calls waiting for one look again at once (others within
        pacing.lua's PERMIT_POLL)."""
        try:
            await _translated(self._client.zrem(permit.key, permit.id))
        finally:
            for queue in self._permit_queues.get(permit.key, ()):
                queue.nudge()

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._client.ping(), TIMEOUT))
        except (RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        for queue in self._queues.values():
            await queue.close()
        for task in [*self._senders.values(), *self._releasers.values(), *self._background]:
            with contextlib.suppress(Exception):
                await task
        await self._client.aclose()

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _indexed(key: str, keys: list[str], index: dict[str, int]) -> int:
    """The script's KEYS position of ``key``, adding it on first use."""
    if key not in index:
        keys.append(key)
        index[key] = len(keys)
    return index[key]


def _outcome(answer: list[Any], offset: float) -> Entered:
    """An ``enter`` answer: refused, queued, or granted at once (tag 0: nobody waited, so a give-back
    rejoins at the head)."""
    kind = int(answer[0])
    if kind == 0:
        return Refused(retry_after=int(answer[1]) / US)
    if kind == 2:
        return Queued(member=_text(answer[1]), wake=int(answer[2]) / US + offset)
    slot, *tats, member = answer[1:]
    charges = tuple(Charge(slot=int(slot), key=int(key)) for key in tats)
    return Granted(Place(_text(member), 0), charges, deadline=int(slot) / US + offset)


def _reservation(buckets: tuple[BucketSpec, ...], permit_key: str | None, granted: Granted) -> Reservation:
    """A queued call's reservation from its grant: its own buckets, and the permit the script leased
    to it under its member's name."""
    permit = None if permit_key is None else Permit(permit_key, granted.place.member)
    return Reservation(buckets, granted.charges, granted.deadline, granted.place, permit)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _translated(call: Awaitable[T]) -> T:
    """Await a Redis call; foreign errors become ``BackendError`` here and nowhere else."""
    try:
        return await call
    except NoScriptError:  # Script.__call__ already reloaded once after NOSCRIPT; it vanished again
        raise BackendError("a pacing script vanished twice") from None
    except (RedisError, OSError) as exc:
        raise BackendError(f"redis: {type(exc).__name__}") from None
