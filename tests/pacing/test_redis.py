"""The Redis backend: same math and order as bucket.py and scheduler.py, one bound across replicas, failures."""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import itertools
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import PacingConfig
from gateway.errors import BackendUnavailable, ConfigError
from gateway.observability.metrics import Metrics
from gateway.pacing import bucket
from gateway.pacing.backend import Place, Reservation
from gateway.pacing.bucket import Charge, worst_excess
from gateway.pacing.limits import BucketLimit
from gateway.pacing.redis import CATCHUP, LOOKAHEAD, RedisBackend
from gateway.pacing.registry import BucketSpec
from gateway.pacing.scheduler import PRIORITIES, Scheduler, Share, Waiter, step
from gateway.pacing.shared_queue import Granted
from tests.pacing.conftest import CountingUpstream, make_credential, paced_calls, warm_up
from tests.support import scrape

JITTER = 0.05  # slack at the upstream only (see test_local.py); grant times are checked without it
ROOT = Path(__file__).resolve().parents[2]
DEAD_REDIS = "redis://127.0.0.1:1/0"
NEVER = 10**15


BOOK = 64  # pacing.lua's


@dataclasses.dataclass
class Book:
    """pacing.lua's refund book of one bucket: the refunded total, and key -> debt of its last charges."""

    refunded: int = 0
    debts: dict[int, int] = dataclasses.field(default_factory=dict)  # in charge order


class Model:
    """bucket.py + scheduler.py doing what pacing.lua does for one replica: the oracle of the test below.
    Each call is charged on its own buckets at its own cost (``BucketSpec.schedule``), as queue.py does;
    a slot given back is rewound or refunded as pacing.lua's "Charge keys and refunds" says."""

    def __init__(self) -> None:
        self.states: dict[str, bucket.BucketState] = {}
        self.books: dict[str, Book] = {}
        self.scheduler: Scheduler[int] = Scheduler()
        self.granted: dict[int, tuple[int, ...]] = {}
        self.waiters: dict[int, Waiter[int]] = {}
        self.specs: dict[int, tuple[BucketSpec, ...]] = {}

    def pairs(self, specs: tuple[BucketSpec, ...]) -> list[tuple[bucket.BucketState, bucket.Limit]]:
        return [(self.states.setdefault(spec.key, bucket.BucketState()), spec.schedule) for spec in specs]

    def take(self, specs: tuple[BucketSpec, ...], slot: int) -> tuple[int, ...]:
        """bucket.take, and each charge's key and debt in its bucket's book."""
        pairs = self.pairs(specs)
        before = [state.tat for state, _ in pairs]
        keys = []
        for spec, tat, charge in zip(specs, before, bucket.take(pairs, slot), strict=True):
            book = self.books.setdefault(spec.key, Book())
            book.debts[charge.key + book.refunded] = tat - slot
            if len(book.debts) > BOOK:
                del book.debts[next(iter(book.debts))]
            keys.append(charge.key + book.refunded)
        return (slot, *keys)

    def release(self, specs: tuple[BucketSpec, ...], keys: tuple[int, ...]) -> None:
        """Each charge taken out of its bucket's history: the tat after it is lower by what it added,
        and each later charge passes on at most its own debt of that."""
        for spec, key in zip(specs, keys, strict=True):
            state, book = self.states[spec.key], self.books[spec.key]
            if key not in book.debts:
                continue
            lower = spec.schedule.interval + max(0, -book.debts.pop(key))
            for later, debt in book.debts.items():
                if later > key and lower > 0:
                    book.debts[later] = debt - lower
                    lower = min(lower, max(0, debt))
            state.tat -= lower
            book.refunded += lower

    def grant(self, now: int) -> None:
        while (head := self.scheduler.peek()) is not None:
            pairs = self.pairs(self.specs[head.ticket])
            slot = bucket.head_slot(pairs, head.arrival, now, CATCHUP)
            if slot > now + LOOKAHEAD:
                return
            self.waiters[head.ticket] = self.scheduler.pop()  # type: ignore[assignment]
            self.granted[head.ticket] = self.take(self.specs[head.ticket], slot)

    def enter(
        self, now: int, specs: tuple[BucketSpec, ...], share: Share, max_wait: int, ticket: int, rejoin: bool = False
    ) -> tuple[int, ...]:
        self.grant(now)
        pairs = self.pairs(specs)
        if not self.scheduler and bucket.estimate(pairs, now, 0) == 0:
            return (1, *self.take(specs, now))
        if rejoin:  # the script counts every call tied with the old tag as ahead
            old = self.waiters[ticket]
            start = min(old.start, self.scheduler._classes[old.cls].virtual)
            higher = sum(len(c.keys) for c in self.scheduler._classes[: old.cls])
            ahead = higher + bisect.bisect_right(self.scheduler._classes[old.cls].keys, (start, NEVER))
        else:
            ahead = self.scheduler.ahead(share.cls, share.tenant)
        wait = bucket.estimate(pairs, now, ahead)
        if wait > max_wait:
            return (0, wait)
        if rejoin:
            self.waiters[ticket] = self.scheduler.rejoin(self.waiters[ticket], deadline=NEVER)
        else:
            self.waiters[ticket] = self.scheduler.push(
                share.cls, share.tenant, share.weight, arrival=now, deadline=NEVER, ticket=ticket
            )
        self.specs[ticket] = specs
        return (2,)


async def enter_one(
    backend: RedisBackend, specs: tuple[BucketSpec, ...], share: Share, max_wait: int, place: Place | None = None
) -> tuple[Any, ...]:
    """One arrival through the script, its answer as it comes (the backend batches them otherwise)."""
    keys: list[str] = []
    index: dict[str, int] = {}
    args = ["enter", 1, CATCHUP, LOOKAHEAD, backend._replica, backend._lease, backend._index(specs[0], keys, index)]
    args += [*backend._bucket_args(specs, keys, index), share.cls, share.tenant, step(share.weight), max_wait]
    args += ["", 0] if place is None else [place.member, place.tag]
    args += [0, 0]  # no max_concurrency
    answer = (await backend._run(keys, args))[1]
    if answer[0] == 1:  # its place, should it give the slot back
        return tuple(int(v) for v in answer[:-1])
    return (2, answer[1].decode()) if answer[0] == 2 else tuple(int(v) for v in answer)


async def test_the_lua_script_computes_what_bucket_and_scheduler_compute(redis_url: str, redis_prefix: str) -> None:
    """800 random arrivals (classes, tenants, weights, costs, one or two buckets), polls, cancellations
    and late grants given back (rewound or refunded) and rejoining at their old place, on a fake clock:
    Redis grants the same calls the same slots in the same order as bucket.py and scheduler.py, each
    charged on its own buckets, and gives back what the model gives back."""
    now = [10**12]
    backend = RedisBackend(PacingConfig(redis_url=redis_url, key_prefix=redis_prefix), clock=lambda: now[0])
    own = BucketSpec("own", BucketLimit(rate=20, per=1, burst=4), "t")
    shared = BucketSpec("shared", BucketLimit(rate=30, per=1, burst=2), "t")
    model, rng = Model(), random.Random(11)
    members: dict[int, str] = {}
    places: dict[int, Granted] = {}
    queued: list[int] = []
    try:
        for ticket in range(800):
            now[0] += rng.choice([0, 0, 1_000, 30_000, 120_000])
            roll = rng.random()
            if roll < 0.6:
                share = Share(rng.choice(PRIORITIES), rng.choice("abc"), rng.choice([1, 1, 3]))
                cost = rng.choice([1, 1, 1, 2])
                specs = tuple(dataclasses.replace(s, cost=cost) for s in rng.choice([(own, shared), (own,)]))
                expected = model.enter(now[0], specs, share, 2 * bucket.US, ticket)
                got = await enter_one(backend, specs, share, 2 * bucket.US)
                assert got[0] == expected[0], (got, expected)
                if expected[0] == 2:
                    members[ticket] = got[1]
                    queued.append(ticket)
                else:
                    assert got == expected
            elif roll < 0.7 and places:  # a grant woken too late rejoins at its old place
                late = rng.choice(sorted(places))
                granted = places.pop(late)
                place, specs = granted.place, model.specs[late]
                model.release(specs, tuple(c.key for c in granted.charges))
                await backend._send_releases([Reservation(specs, granted.charges, 0, place)])
                for spec in specs:
                    state = await backend._run([backend._key(spec)], ["state", 1])
                    assert int(state[1]) == model.states[spec.key].tat
                expected = model.enter(now[0], specs, Share(), 2 * bucket.US, late, rejoin=True)
                waiter = model.waiters[late]
                share = Share(PRIORITIES[waiter.cls], waiter.tenant)
                got = await enter_one(backend, specs, share, 2 * bucket.US, place)
                assert got[0] == expected[0], (got, expected)
                if expected[0] == 2:
                    assert got[1] == place.member
                    queued.append(late)
            else:
                leaving = [queued.pop(rng.randrange(len(queued)))] if queued and rng.random() < 0.2 else []
                for gone in leaving:
                    model.scheduler.remove(model.waiters[gone])
                model.grant(now[0])
                polled = await backend._poll((own,), [members[t] for t in leaving])
                got_slots = {m: (g.charges[0].slot, *(c.key for c in g.charges)) for m, g in polled.granted.items()}
                want = {members[t]: v for t, v in model.granted.items()}
                assert got_slots == want
                for t in set(model.granted) - set(leaving):  # granted before its cancellation reached Redis
                    queued.remove(t)
                    places[t] = polled.granted[members[t]]
                    assert places[t].place.tag == model.waiters[t].start
                model.granted.clear()
        assert len(places) > 20  # rejoins happened
        assert sum(book.refunded for book in model.books.values()) > 0  # and refunds
    finally:
        await backend.close()


async def test_three_pacers_share_one_bound(
    make_pacer: Any, redis_url: str, redis_prefix: str, counting_upstream: CountingUpstream
) -> None:
    """Three pacers, each with its own Redis pool, together stay within the bound, each in FIFO order."""
    pacing = {"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix}
    pacers = [await make_pacer(pacing=pacing) for _ in range(3)]
    credential = make_credential(rate=100, burst=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await warm_up(session, counting_upstream.url, 10)
        orders = await asyncio.gather(
            *(paced_calls(p, credential, session, counting_upstream.url, 100) for p in pacers)
        )
    arrivals = counting_upstream.arrivals
    assert len(arrivals) == 300
    assert worst_excess(arrivals, rate=100, per=1, burst=10, slack=counting_upstream.slack(JITTER)) <= 0
    assert all([i for i, _ in order] == list(range(100)) for order in orders)
    assert achieved(counting_upstream) >= 0.98 * 100


@pytest.mark.slow
async def test_three_processes_share_one_bound(
    redis_url: str, redis_prefix: str, counting_upstream: CountingUpstream
) -> None:
    """Three replica processes sharing the real Redis send at most the bound, together, at the full rate."""
    start_at = time.time() + 3
    args = [redis_url, redis_prefix, counting_upstream.url, "100", "100", "10", str(start_at)]
    processes = [
        await asyncio.create_subprocess_exec(sys.executable, "-m", "tests.pacing.replica", *args, cwd=ROOT)
        for _ in range(3)
    ]
    # a hang guard: the replicas' 3 s of calls come after their imports, which take tens of seconds on a loaded box
    codes = await asyncio.wait_for(asyncio.gather(*(p.wait() for p in processes)), timeout=120)
    assert codes == [0, 0, 0]
    arrivals = counting_upstream.arrivals
    assert len(arrivals) == 300
    assert worst_excess(arrivals, rate=100, per=1, burst=10, slack=counting_upstream.slack(JITTER)) <= 0
    assert achieved(counting_upstream) >= 0.98 * 100


def achieved(upstream: CountingUpstream, burst: int = 10) -> float:
    """Calls per second the upstream saw after the initial burst, over the run less the longest stall
    of this process's loop: the upstream (and in-process replicas) can neither record nor send during
    it, so it is the machine's time, not the pacer's. Slots the replicas woke up for too late are in
    it: given back and refunded (shared_queue.py, pacing.lua), they cost nothing."""
    arrivals = upstream.arrivals
    return (len(arrivals) - burst) / (max(arrivals) - min(arrivals) - upstream.longest_stall)


async def test_queued_calls_are_charged_their_own_cost_across_replicas(
    make_pacer: Any, redis_url: str, redis_prefix: str, counting_upstream: CountingUpstream
) -> None:
    """Calls of cost 1 and 5 queued together from two replicas: the shared queue charges each its own
    cost, so the upstream sees the bound counted in tokens, and each replica's calls of one cost go
    in arrival order (its lane's; the two costs are two lanes, so a slot woken up too late, over
    100 ms here, may let a call of the other cost go first)."""
    pacing = {"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix}
    pacers = [await make_pacer(pacing=pacing) for _ in range(2)]
    credential = make_credential(rate=10, burst=5)
    orders: list[list[int]] = [[], []]

    async def call(replica: int, i: int, session: aiohttp.ClientSession) -> None:
        cost = 5 if i % 2 else 1
        permit = await pacers[replica].acquire(credential, "/hit", cost=cost)
        orders[replica].append(i)
        try:
            async with session.get(f"{counting_upstream.url}?cost={cost}") as response:
                await response.read()
        finally:
            permit.release()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await warm_up(session, counting_upstream.url, 4)
        await asyncio.gather(*(call(replica, i, session) for i in range(6) for replica in (0, 1)))
    assert len(counting_upstream.tokens) == 2 * (3 * 1 + 3 * 5)
    assert worst_excess(counting_upstream.tokens, rate=10, per=1, burst=5, slack=counting_upstream.slack(JITTER)) <= 0
    for order in orders:
        assert [i for i in order if i % 2 == 0] == [0, 2, 4] and [i for i in order if i % 2] == [1, 3, 5]


async def test_a_pause_seen_by_one_replica_holds_back_the_others(
    make_pacer: Any, redis_url: str, redis_prefix: str
) -> None:
    """A 429 observed by one pacer pauses the shared bucket for another pacer too."""
    pacing = {"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix}
    first, second = await make_pacer(pacing=pacing), await make_pacer(pacing=pacing)
    credential = make_credential(rate=100)
    assert await first.observe(credential, "/", 429, {"Retry-After": "1"}) == 1
    permit = await second.acquire(credential, "/")
    assert 0.85 <= permit.waited < 2 * 1  # held back for the 1 s pause, not for a second one


async def test_a_vanished_script_is_loaded_again(make_pacer: Any, redis_url: str, redis_prefix: str) -> None:
    """After NOSCRIPT (Redis restarted) the reservation is retried once with the script reloaded."""
    metrics = Metrics()
    pacer = await make_pacer(
        metrics=metrics, pacing={"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix}
    )
    pacer._shared._script.sha = "0" * 40
    permit = await pacer.acquire(make_credential(), "/")
    assert permit.waited < 2
    assert scrape(metrics.registry, "gateway_pacing_backend_fallbacks_total") == 0


async def test_unreachable_redis_falls_back_to_local_buckets(make_pacer: Any) -> None:
    """Policy local: not ready, calls still paced (in-process), one fallback counted."""
    metrics = Metrics()
    pacer = await make_pacer(
        metrics=metrics, pacing={"backend": "redis", "redis_url": DEAD_REDIS, "on_backend_error": "local"}
    )
    assert await pacer.ping() is False
    credential = make_credential(rate=10, burst=2, max_wait=0.05)
    await pacer.acquire(credential, "/")
    with pytest.raises(Exception, match="max_wait"):
        await pacer.acquire(credential, "/")
    assert scrape(metrics.registry, "gateway_pacing_backend_fallbacks_total") == 1
    assert (await pacer.describe(credential))["backend"] == "local"


async def test_unreachable_redis_rejects_calls_under_the_reject_policy(make_pacer: Any) -> None:
    """Policy reject: a call that needs the shared backend gets BackendUnavailable (503)."""
    pacer = await make_pacer(pacing={"backend": "redis", "redis_url": DEAD_REDIS, "on_backend_error": "reject"})
    with pytest.raises(BackendUnavailable):
        await pacer.acquire(make_credential(), "/")


class FlakyLink:
    """A loopback TCP relay to the real Redis that the test can cut and restore (an outage on demand)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()
                self._writers.discard(dst)

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def test_the_pacer_returns_to_redis_when_it_comes_back(
    make_pacer: Any, redis_url: str, redis_prefix: str
) -> None:
    """An outage switches to local buckets (counted once); when Redis answers again, Redis is used again."""
    link = FlakyLink(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    await link.up()
    pacing = {"backend": "redis", "redis_url": f"redis://127.0.0.1:{link.port}/0", "key_prefix": redis_prefix}
    metrics = Metrics()
    pacer = await make_pacer(metrics=metrics, pacing=pacing)
    credential = make_credential(rate=1000)
    await pacer.acquire(credential, "/")
    await link.down()
    await pacer.acquire(credential, "/")
    assert (await pacer.describe(credential))["backend"] == "local"
    await link.up()
    deadline = time.monotonic() + 10
    while (await pacer.describe(credential))["backend"] != "redis":
        assert time.monotonic() < deadline, "the pacer never went back to Redis"
        await asyncio.sleep(0.05)
    await pacer.acquire(credential, "/")
    assert scrape(metrics.registry, "gateway_pacing_backend_fallbacks_total") == 1
    await link.down()


async def test_a_malformed_redis_url_is_a_config_error(make_pacer: Any) -> None:
    """pacing.redis_url that is not a Redis URL stops the start with the key named."""
    with pytest.raises(ConfigError, match=r"pacing\.redis_url"):
        await make_pacer(pacing={"backend": "redis", "redis_url": "http://127.0.0.1:6379"})


async def test_slots_given_back_never_take_the_bucket_below_the_gcra_of_the_slots_kept(
    redis_url: str, redis_prefix: str
) -> None:
    """Random charges (costs 1-3), pauses and give-backs (rewinds, refunds, lost slots) on a fake
    clock: after each one the script's tat is at least the GCRA's recomputed over the slots still
    held and the pauses, so what is sent stays within the bound; and refunds do happen."""
    now = [10**12]
    backend = RedisBackend(PacingConfig(redis_url=redis_url, key_prefix=redis_prefix), clock=lambda: now[0])
    spec = BucketSpec("b", BucketLimit(rate=100, per=1, burst=10), "t")
    rng = random.Random(5)
    held: list[tuple[BucketSpec, Charge]] = []  # in charge order
    history: list[tuple[int, int, Charge | None]] = []  # (slot, interval, charge; None: a pause)
    refunded = 0
    try:
        for _ in range(600):
            now[0] += rng.choice([0, 0, 1_000, 5_000, 30_000, 300_000])
            roll = rng.random()
            if roll < 0.6:
                costed = dataclasses.replace(spec, cost=rng.choice([1, 1, 1, 2, 3]))
                got = await enter_one(backend, (costed,), Share(), 10 * bucket.US)
                if got[0] == 2:  # queued: granted as soon as due
                    while not (polled := await backend._poll((costed,), [])).granted:
                        now[0] += 1_000
                    (granted,) = polled.granted.values()
                    charge = granted.charges[0]
                else:
                    charge = Charge(slot=got[1], key=got[2])
                held.append((costed, charge))
                history.append((charge.slot, costed.schedule.interval, charge))
            elif roll < 0.65:
                await backend.pause(spec, 0.05)
                history.append((now[0] + 50_000 + spec.schedule.tolerance, 0, None))
            elif held:
                index = max(0, len(held) - 1 - rng.randrange(12))
                costed, charge = held.pop(index)
                before = await tat_of(backend, spec)
                await backend._send_releases([Reservation((costed,), (charge,), 0, Place("x", 0))])
                history = [entry for entry in history if entry[2] is not charge]
                refunded += index < len(held) and await tat_of(backend, spec) < before  # a later one is held
            gcra = 0
            for slot, interval, _ in history:
                gcra = max(gcra, slot) + interval
            assert await tat_of(backend, spec) >= gcra
        assert refunded > 0
    finally:
        await backend.close()


async def tat_of(backend: RedisBackend, spec: BucketSpec) -> int:
    return int((await backend._run([backend._key(spec)], ["state", 1]))[1])


async def test_calls_at_once_that_a_stall_makes_late_all_go(make_pacer: Any, redis_url: str, redis_prefix: str) -> None:
    """20, then 200 calls at once on a bucket no call waits for; the loop stalls for 50 ms as soon as
    one script call's slots are handed to their callers, so they run too late for them and wait
    again: all are granted all the same. The 20 used to hang for good: the lane, empty once its
    slots were handed out, was forgotten, and no poll served the callers waiting in it again."""
    pacer = await make_pacer(pacing={"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix})
    credential = make_credential(rate=1e9, burst=10**6, max_wait=600)
    assert pacer._shared is not None
    queues = pacer._shared._queues

    def waiting() -> int:
        return sum(len(lane.callers) for queue in queues.values() for lane in queue._lanes.values())

    async def stall_when_handed(calls: asyncio.Future[Any]) -> None:
        """Run each loop turn; once 2+ callers were handed slots since the last turn, block the loop."""
        seen = 0
        while not calls.done():
            now = waiting()
            if now <= seen - 2:
                time.sleep(0.05)  # a stall (GC, CPU contention) between the hand-over and the callers
                return
            seen = now
            await asyncio.sleep(0)

    for n in (20, 200):
        calls = asyncio.gather(*(pacer.acquire(credential, "/") for _ in range(n)))
        await asyncio.gather(stall_when_handed(calls), asyncio.wait_for(calls, 20))


async def test_three_pacers_keep_arrival_order_through_stalls(
    make_pacer: Any, redis_url: str, redis_prefix: str
) -> None:
    """Three pacers, 100 calls each on 100/s, while the loop stalls for 8-32 ms every 10-38 ms: each
    pacer's calls go in arrival order (one stall could make a caller's slot too late and spare the
    slot of a later caller handed one with it, which then went first)."""
    pacing = {"backend": "redis", "redis_url": redis_url, "key_prefix": redis_prefix}
    pacers = [await make_pacer(pacing=pacing) for _ in range(3)]
    credential = make_credential(rate=100, burst=10, max_wait=600)
    orders: list[list[int]] = [[], [], []]

    async def call(replica: int, i: int) -> None:
        await pacers[replica].acquire(credential, "/")
        orders[replica].append(i)

    loop = asyncio.get_running_loop()
    calls = asyncio.gather(*(call(replica, i) for i in range(100) for replica in range(3)))
    stalls = itertools.count()

    def stall() -> None:  # a timer's callback: it blocks the loop right after the slots' timers due with it
        if not calls.done():
            i = next(stalls)
            time.sleep(0.008 + 0.004 * (i % 7))  # the loop cannot run for 0.8 to 3.2 slots
            loop.call_later(0.01 + 0.007 * (i % 5), stall)

    loop.call_later(0.03, stall)
    await asyncio.wait_for(calls, 60)
    assert orders == [list(range(100))] * 3
