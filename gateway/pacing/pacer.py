"""``GatewayPacer``: the ``Pacer`` every upstream call goes through.

``acquire`` resolves the buckets of the call (registry.py) and waits for its turn in the home
bucket's queue, which grants slot and ``max_concurrency`` permit together: in-process (queue.py), or
on Redis the bucket's shared queue (redis.py; concurrency.py keeps the permit's lease alive). Either way
the order is scheduler.py's (priority class, fair share between tenants, FIFO per tenant) and a
call whose wait would exceed ``max_wait`` is refused before queueing.

Backends: ``local`` (in-process), or ``redis`` shared by every replica. When Redis fails, the policy
``pacing.on_backend_error`` decides: ``local`` switches to in-process buckets (logged once per outage,
``gateway_pacing_backend_fallbacks_total``) until a probe sees Redis again; ``reject`` raises
``BackendUnavailable`` (503) for the calls that needed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import partial
from typing import Any, NamedTuple, TypeVar

import structlog
from prometheus_client import Histogram

from gateway.config import Config
from gateway.domain.catalog import Answers
from gateway.domain.models import RateLimitOverride
from gateway.domain.objects import Credential
from gateway.errors import BackendUnavailable, ConfigError, InvalidRequest, RateLimited
from gateway.keylocks import KeyLocks
from gateway.lru import LRU
from gateway.observability.metrics import Metrics
from gateway.pacing import adaptive, bucket, queue
from gateway.pacing.backend import Backend, BackendError, Permit, Refused, Reservation
from gateway.pacing.concurrency import SharedPermits
from gateway.pacing.limits import EffectiveLimit
from gateway.pacing.local import LocalBackend
from gateway.pacing.queue import Permits, Ticket
from gateway.pacing.redis import LEASE_TTL, RedisBackend
from gateway.pacing.registry import BucketSpec, Plan, Route, airtable_base, plan
from gateway.pacing.scheduler import DEFAULT_SHARE, PRIORITIES, Share

log = structlog.get_logger(__name__)
T = TypeVar("T")
PROBE_INTERVAL = 1.0
GUARD_HORIZON = 3600.0


class GrantedPermit:
    """A slot that was granted; ``release`` gives back the concurrency permit (idempotent).

    ``waited`` and ``max_wait`` are plain attributes, not properties: the client reads them on every
    call, and nothing assigns them but ``__init__``."""

    __slots__ = ("_release", "max_wait", "waited")

    def __init__(self, waited: float, release: Callable[[], None] | None, max_wait: float) -> None:
        self.waited = waited
        self._release = release
        self.max_wait = max_wait

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


class GatewayPacer:
    """Implements ``gateway.pacing.api.Pacer`` over a local or Redis backend."""

    def __init__(self, config: Config, metrics: Metrics, *, permit_ttl: float = LEASE_TTL) -> None:
        """``permit_ttl``: how long a shared ``max_concurrency`` permit outlives a crashed replica."""
        self._config = config
        self._permit_ttl = permit_ttl
        self._permits: SharedPermits | None = None
        self._metrics = metrics
        self._local = LocalBackend()
        self._guard = LocalBackend()
        self._held: dict[str, asyncio.Future[None]] = {}  # per bucket: its newest call the guard holds back
        self._shared: RedisBackend | None = None
        self._degraded = False
        self._probe: asyncio.Task[None] | None = None
        # Airtable's plans per credential and base (the base comes from the call's path), and the route
        # each Airtable credential last used (``describe``): as many as the credential cache holds.
        # Other credentials keep their one plan on the credential object (``_route``).
        size = config.upstream.credential_cache_size
        self._routes: LRU[str, Route] = LRU(size)
        self._plans: LRU[tuple[str, str, RateLimitOverride | None, str | None], Plan] = LRU(size)
        self._rule_locks: KeyLocks[str] = KeyLocks()  # per rule bucket with calls in it (credentials x rules)
        self._queued: Counter[tuple[str, str]] = Counter()  # (home bucket, priority) -> calls waiting
        self._permits_local: dict[str, Permits] = {}  # per credential, while its permits are held or awaited
        # the wait histogram's child per (provider, priority): a bounded set
        self._waits: dict[tuple[str, str], Histogram] = {}

    async def start(self) -> None:
        """Connect the shared backend if configured; an unreachable Redis applies the policy now."""
        if self._config.pacing.backend == "redis" and self._shared is None:
            try:
                self._shared = RedisBackend(self._config.pacing, lease_ttl=self._permit_ttl)
            except ValueError as exc:  # redis-py's message names the problem, never the URL's secrets
                raise ConfigError(f"pacing.redis_url: {exc}") from None
            self._permits = SharedPermits(self._shared, ttl=self._permit_ttl)
        if self._shared is not None and not await self._shared.ping():
            self._degrade("unreachable at start")

    def reconfigure(self, config: Config) -> None:
        """Take new provider limits (a reload); the backend keeps running, so ``pacing.*`` is not reread."""
        self._config = config.model_copy(update={"pacing": self._config.pacing})
        self._plans.clear()  # the plans kept on credential objects name the config they were made from

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self._permits is not None:
            await self._permits.close()
        if self._shared is not None:
            await self._shared.close()

    # --- the Pacer protocol -------------------------------------------------------------------------

    async def acquire(
        self,
        credential: Credential,
        path: str,
        *,
        max_wait: float | None = None,
        share: Share = DEFAULT_SHARE,
        method: str = "GET",
        cost: int | None = None,
    ) -> GrantedPermit:
        call = self._route(credential, path, method)
        if cost is not None:
            call = _with_cost(call, cost)
        if credential.provider == "airtable":  # a home bucket per base: ``describe`` shows the one used last
            self._routes.put(credential.id, call)
        budget = call.limit.max_wait if max_wait is None else max_wait
        started = time.monotonic()
        if call.rule_buckets:
            release = await self._rule_turn(credential.id, call, share, started + budget)
        else:
            release = await self._take_turn(credential.id, call, share, started + budget)
        waited = time.monotonic() - started
        histogram = self._waits.get((call.provider, share.priority))
        if histogram is None:
            histogram = self._waits[(call.provider, share.priority)] = self._metrics.pacing_wait.labels(
                call.provider, share.priority
            )
        histogram.observe(waited)
        return GrantedPermit(waited, release, budget)

    async def observe(
        self,
        credential: Credential,
        path: str,
        status: int,
        headers: Mapping[str, str],
        *,
        method: str = "GET",
        body: bytes | None = None,
    ) -> float | None:
        answers = self._planned(credential).answers
        if status in (429, 503) or status in answers.throttle_statuses:
            self._metrics.upstream_throttled.labels(credential.provider).inc()
        pause = adaptive.pause_for(answers, status, headers, time.time(), body)
        if pause is None:
            return None
        call = self._route(credential, path, method)
        targets = call.target if not pause.credential_wide else (*call.target, call.home)
        seconds = pause.seconds
        try:
            for spec in dict.fromkeys(targets):
                await self._with_backend(partial(_pause_on, spec=spec, seconds=seconds))
        except BackendUnavailable:
            # The answer itself was fine; the next acquire reports the backend to its caller.
            log.warning("pacing_pause_not_shared", provider=credential.provider)
            return seconds
        log.info("pacing_paused", provider=credential.provider, status=status, seconds=round(seconds, 3))
        return seconds

    def reads_body(self, credential: Credential, status: int) -> bool:
        return adaptive.reads_body(self._planned(credential).answers, status)

    def limit(self, credential: Credential) -> EffectiveLimit:
        """The credential's limit as pacing applies it now (catalog, config and override; a reload's too)."""
        return self._route(credential, "").limit

    async def describe(self, credential: Credential) -> dict[str, Any]:
        """The bucket this credential last used (or would use) with its live state: one bucket per
        credential but for Airtable's, one per base."""
        call = self._routes.peek(credential.id) if credential.provider == "airtable" else None
        call = call or self._route(credential, "")
        try:
            state = await self._with_backend(lambda backend: backend.describe(call.home))
        except BackendUnavailable:
            state = {"tokens": None, "paused_until": None, "error": "the shared pacing backend is unavailable"}
        limit = call.limit
        # Calls waiting per class: in this process, or on Redis in every replica (the backend says).
        queued = state.pop("queued", None) or {p: self._queued[(call.home.key, p)] for p in PRIORITIES}
        return {
            "backend": self._active().name,
            "rate": limit.rate,
            "per": limit.per,
            "burst": limit.burst,
            "max_wait": limit.max_wait,
            "max_concurrency": limit.max_concurrency,
            "queue_depth": sum(queued.values()),
            "queued": queued,
            **state,
        }

    async def ping(self) -> bool:
        return True if self._shared is None else await self._shared.ping()

    def _route(self, credential: Credential, path: str, method: str = "GET") -> Route:
        """The call's route, from the credential's plan (``registry.plan``): it is on every call."""
        if credential.provider != "airtable":
            return self._planned(credential).plan.route(method, path)
        base = airtable_base(credential.base_url, path)
        key = (credential.id, credential.provider, credential.rate_limit, base)
        known = self._plans.get(key)
        if known is None:
            known = plan(self._config, credential, path)
            self._plans.put(key, known)
        return known.route(method, path)

    def _planned(self, credential: Credential) -> _Planned:
        """What pacing derives from this credential object, kept on it (``Credential.memo``) and made
        again after a reload: its plan (an Airtable credential's plan per base is in ``_plans``) and
        its provider's answers."""
        planned: _Planned | None = credential.memo.pacing
        if planned is None or planned.config is not self._config:
            config = self._config
            entry = config.catalog.get(credential.provider) or config.catalog["rest"]
            planned = credential.memo.pacing = _Planned(config, plan(config, credential, ""), entry.definition.answers)
        return planned

    # --- waiting ------------------------------------------------------------------------------------

    async def _wait_local(
        self, credential_id: str, call: Route, share: Share, budget: float
    ) -> Callable[[], None] | None:
        """In-process: the home bucket's queue grants slot and ``max_concurrency`` permit together."""
        permits = self._local_permits(credential_id, call.limit.max_concurrency)
        if permits is not None or not self._local.grant_now(call.buckets):
            outcome = self._local.enter(call.buckets, share, budget, permits)
            if isinstance(outcome, Ticket):
                with self._queued_as(call, share):
                    outcome = await queue.wait(outcome)
            if isinstance(outcome, Refused):
                raise self._refused(call, outcome)
        hold = self._guard_hold(call)
        if hold is not None or call.buckets[0].key in self._held:
            try:
                await self._held_back(call, share, hold)
            except BaseException:
                if permits is not None:
                    permits.give_back()
                raise
        return None if permits is None else permits.give_back

    def _guard_hold(self, call: Route) -> Reservation | None:
        """Hold back a burst that a stall of this process would send: the same buckets on real time.

        If the process stalls (GC, CPU contention), every waiter granted just before it resumes
        after it, together with those granted after it. Re-pacing each resumed call through
        in-process copies of the buckets keeps the actual sends within the bound; without a stall it
        never delays anything. Local only: on Redis the other replicas went on time, so a slot woken
        up for too late is given back instead (shared_queue.py).
        """
        # Nothing to hold back: a slot already here, or a refusal (that would take a stall of an hour: just go).
        return self._guard.hold_back(call.buckets, GUARD_HORIZON)

    async def _held_back(self, call: Route, share: Share, hold: Reservation | None) -> None:
        """Wait for the stall guard's slot (``hold``, if any), then for the calls of this bucket held
        back before this one: after a stall a later call whose guard slot is already here would
        otherwise go first, its task running before the timer of an earlier held call (a FIFO
        inversion within one tenant and class)."""
        key = call.buckets[0].key
        ahead = self._held.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held[key] = mine
        try:
            if hold is not None:
                await self._sleep(call, share, self._guard, hold)
            if ahead is not None:
                await asyncio.shield(ahead)
        finally:
            mine.set_result(None)
            if self._held.get(key) is mine:
                del self._held[key]

    def _local_permits(self, credential_id: str, limit: int | None) -> Permits | None:
        if limit is None:
            return None
        permits = self._permits_local.get(credential_id)
        if permits is None:
            permits = self._permits_local[credential_id] = Permits(limit, partial(self._drop_permits, credential_id))
        permits.limit = limit  # a PATCHed limit applies from the next grant
        return permits

    def _drop_permits(self, credential_id: str, permits: Permits) -> None:
        """Forget a credential's permits once none is held or awaited: a new ``Permits`` is the same."""
        if self._permits_local.get(credential_id) is permits:
            del self._permits_local[credential_id]

    async def _wait_shared(
        self, credential_id: str, call: Route, share: Share, give_up_at: float
    ) -> Callable[[], None] | None:
        """Redis: the turn in the bucket's shared queue, which grants slot and ``max_concurrency``
        permit together. Redis failing under the ``local`` policy sends the call to the in-process
        queue instead."""
        try:
            permit = await self._turn_on_redis(credential_id, call, share, give_up_at)
        except BackendError as exc:
            self._degrade(str(exc))
            if self._config.pacing.on_backend_error == "reject":
                raise BackendUnavailable("the shared pacing backend (Redis) is unavailable") from None
            return await self._wait_local(credential_id, call, share, max(0.0, give_up_at - time.monotonic()))
        if permit is None:
            return None
        assert self._permits is not None
        self._permits.hold(permit)
        return partial(self._permits.release, permit)

    async def _turn_on_redis(self, credential_id: str, call: Route, share: Share, give_up_at: float) -> Permit | None:
        """Queue; the backend hands the call a slot of its lane when the slot comes (a slot this
        replica wakes up for too late is given back instead, and the call waits on: see
        shared_queue.py). Returns the ``max_concurrency`` permit granted with the slot, if the
        credential has a limit."""
        assert self._shared is not None
        limit = call.limit.max_concurrency
        permits = None if limit is None else (self._shared.permit_key(call.home.tag, credential_id), limit)
        with self._queued_as(call, share):
            budget = max(0.0, give_up_at - time.monotonic())
            outcome = await self._shared.wait_turn(_shared_order(call), share, budget, permits)
        if isinstance(outcome, Refused):
            raise self._refused(call, outcome)
        return outcome.permit

    def _take_turn(
        self, credential_id: str, call: Route, share: Share, give_up_at: float
    ) -> Awaitable[Callable[[], None] | None]:
        """The call's slot in all its buckets (and its ``max_concurrency`` permit, if any). Not a
        coroutine itself: it picks the backend's, one frame less on every call."""
        if self._active() is self._local:
            return self._wait_local(credential_id, call, share, max(0.0, give_up_at - time.monotonic()))
        return self._wait_shared(credential_id, call, share, give_up_at)

    async def _rule_turn(
        self, credential_id: str, call: Route, share: Share, give_up_at: float
    ) -> Callable[[], None] | None:
        """A call matching a rule with a bucket waits for that rule first, taking nothing meanwhile.

        Queued with its rule's buckets, it would hold the head of its credential's queue until its
        rule allowed it (a queue of HubSpot searches would stall batch writes behind it). So rule
        calls wait one at a time per rule bucket in this process (FIFO) until the rule's buckets
        have their tokens, then take their turn with all their buckets like any call.
        """
        async with self._rule_locks.hold(call.rule_buckets[0].key):
            for spec in call.rule_buckets:
                while (wait := await self._rule_deficit(spec)) > 0:
                    if time.monotonic() + wait > give_up_at:
                        raise self._refused(call, Refused(retry_after=wait))
                    await asyncio.sleep(wait)
            return await self._take_turn(credential_id, call, share, give_up_at)

    async def _rule_deficit(self, spec: BucketSpec) -> float:
        """Seconds until ``spec`` could grant the call's tokens (0: now), from its live state."""
        try:
            state = await self._with_backend(partial(_describe_on, spec=spec))
        except BackendUnavailable:
            return 0.0  # the reservation that follows reports the backend to the caller
        paused = state.get("paused_until")
        schedule = spec.limit.schedule
        capacity = (schedule.tolerance + schedule.interval) / schedule.interval  # burst less the headroom
        missing = min(spec.cost, capacity) - float(state.get("tokens") or 0.0)
        return max(0.0, paused - time.time() if paused else 0.0, missing * schedule.interval / bucket.US)

    def _refused(self, call: Route, outcome: Refused) -> RateLimited:
        self._metrics.pacing_rejections.labels(call.provider).inc()
        return RateLimited("the pacing queue wait would exceed max_wait", retry_after=outcome.retry_after)

    async def _sleep(self, call: Route, share: Share, backend: Backend, reservation: Reservation) -> None:
        loop = asyncio.get_running_loop()
        if reservation.deadline <= loop.time():
            return
        woken: asyncio.Future[None] = loop.create_future()
        timer = loop.call_at(reservation.deadline, _wake, woken)
        try:
            with self._queued_as(call, share):
                await woken
        except asyncio.CancelledError:
            # The caller went away: give the slot back so the next caller can use it.
            await asyncio.shield(self._release(backend, reservation))
            raise
        finally:
            timer.cancel()

    @contextlib.contextmanager
    def _queued_as(self, call: Route, share: Share) -> Iterator[None]:
        """Count a waiting call in the queue-depth gauge and in ``describe``, by class."""
        gauge = self._metrics.pacing_queue_depth.labels(call.provider, share.priority)
        key = (call.home.key, share.priority)
        gauge.inc()
        self._queued[key] += 1
        try:
            yield
        finally:
            gauge.dec()
            self._queued[key] -= 1
            if not self._queued[key]:
                del self._queued[key]

    async def _release(self, backend: Backend, reservation: Reservation) -> None:
        with contextlib.suppress(BackendError):
            await backend.release(reservation)

    # --- backend choice and failover -----------------------------------------------------------------

    def _active(self) -> Backend:
        if self._shared is None:
            return self._local
        if self._degraded and self._config.pacing.on_backend_error == "local":
            return self._local
        return self._shared

    async def _with_backend(self, operation: Callable[[Backend], Awaitable[T]]) -> T:
        backend = self._active()
        try:
            return await operation(backend)
        except BackendError as exc:
            if backend is self._local:
                raise
            self._degrade(str(exc))
            if self._config.pacing.on_backend_error == "reject":
                raise BackendUnavailable("the shared pacing backend (Redis) is unavailable") from None
            return await operation(self._local)

    def _degrade(self, reason: str) -> None:
        if not self._degraded:
            self._degraded = True
            self._metrics.pacing_backend_fallbacks.inc()
            log.warning("pacing_backend_unavailable", reason=reason, policy=self._config.pacing.on_backend_error)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Ping Redis every second while degraded; switch back as soon as it answers."""
        assert self._shared is not None
        while True:
            if await self._shared.ping():
                break
            await asyncio.sleep(PROBE_INTERVAL)
        self._degraded = False
        log.info("pacing_backend_recovered")


class _Planned(NamedTuple):
    config: Config
    plan: Plan  # an Airtable credential's calls use the one of their base instead (``_route``)
    answers: Answers


def _shared_order(call: Route) -> tuple[BucketSpec, ...]:
    """The buckets as Redis's shared queue takes them: a rule call queues on its rule's bucket.

    Plain calls queue on the credential's bucket, the calls of a rule on the rule's first bucket
    (with the credential's after it), so a queue of rule calls, other replicas' too, never holds the
    head of the credential's queue. Each queued call is charged on its own buckets at its own cost.
    """
    if not call.rule_buckets:
        return call.buckets
    return call.rule_buckets + tuple(spec for spec in call.buckets if spec not in call.rule_buckets)


async def _describe_on(backend: Backend, spec: BucketSpec) -> dict[str, Any]:
    return await backend.describe(spec)


async def _pause_on(backend: Backend, spec: BucketSpec, seconds: float) -> None:
    await backend.pause(spec, seconds)


def _with_cost(call: Route, cost: int) -> Route:
    """The route at the client's ``x-gateway-cost``: at least 1, at most the smallest burst it takes."""
    if not 1 <= cost <= call.smallest_burst:
        raise InvalidRequest(
            f"x-gateway-cost: {cost} is outside 1..{call.smallest_burst} (the smallest burst of this call's buckets)",
            field="x-gateway-cost",
        )
    return call.costed(cost)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
