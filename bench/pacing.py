"""Pacing benchmark: does the upstream see the limit, the whole limit, and nothing but the limit?

    python bench/pacing.py [--quick] [--json PATH] [--redis-url URL] [--duration S]

Every role runs in its own process: a counting upstream (records when each call arrives), 1 or 3
gateway replicas whose pacers share one bucket (local, or Redis), and a process that parks 10,000
callers on one bucket to measure what waiting costs. Reported per scenario:

- offered: calls/s the clients start (open loop, 2x the limit) and achieved: calls/s the upstream
  saw after the initial burst, as % of the limit;
- excess: the worst window of the upstream's arrivals over ``burst + rate*T/per`` (must be <= 0);
- extra wait p50/p99: upstream arrival minus the ideal FIFO GCRA schedule of the same calls (the
  pacer's one-token jitter headroom, event-loop lag and the loopback hop are all in it);
- priorities (issue 14), per backend and replica count: one 50/s bucket with the three classes
  mixed: three ``normal`` tenants flooding it with weights 3, 1, 1, a light ``normal`` tenant
  calling every 0.5 s, a ``low`` batch backlog and a ``high`` call every 0.25 s. Reported: achieved
  %, worst excess at grant, wait p50/p99 per class, the waits of the high and the light calls
  against the promised 2 intervals + 50 ms, each flooder's min-max share of every 100 consecutive
  flooder grants against its weight, and FIFO inversions within a tenant and class;
- waiting: CPU (% of one core) and memory (RSS) of a pacer process while 10,000 callers wait,
  spread over 3 classes and 100 tenants of weights 1-4 (on a 10/s bucket, so the measured seconds
  are mostly waiting, with 10 grants/s), and whether the grants meanwhile kept the order (all
  ``high``, FIFO per tenant);
- overhead: the time one ``acquire`` takes when nothing has to wait (Redis: one round trip, shared
  by every call queued in the same tick).

``--quick`` (CI) runs 1 s of load (5 s for priorities) on one local and one Redis replica, 1,000
waiters for 1 s and 500 acquires: numbers too rough to quote, but every code path runs. Either way
the exit code is 1 when a guarantee broke: the limit at grant, a FIFO inversion once the backlog is
queued or a share outside its weight ± 5 points (with 3 Redis replicas the shares are printed
instead, see ``priority_failures``), a grant out of order among the waiters or fewer than half the
grants the 10/s bucket owes them, or the high/light waits over their bound.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.config import Config  # noqa: E402
from gateway.domain.models import BearerAuth, RateLimitOverride  # noqa: E402
from gateway.domain.objects import Credential  # noqa: E402
from gateway.observability.metrics import Metrics  # noqa: E402
from gateway.pacing.bucket import worst_excess  # noqa: E402
from gateway.pacing.pacer import GatewayPacer  # noqa: E402
from gateway.pacing.scheduler import PRIORITIES, Share  # noqa: E402

RATE, PER, BURST = 200.0, 1.0, 20
WAITERS = 10_000
# The priorities scenario: one 50/s bucket (burst 1). Normal: three flooding tenants of weights
# 3, 1, 1 (expected shares 60/20/20 %) and a light one calling every 0.5 s; low: a batch backlog
# of 10 s of the limit; high: one call every 0.25 s, which must overtake all of that.
SHARE_RATE = 50.0
FLOODERS = {"a": 3.0, "b": 1.0, "d": 1.0}
SHARE_TOLERANCE = 5.0  # percentage points, over every 100 consecutive grants (issue 14)
NOISE = 0.05  # s: event-loop lag on a shared, loaded 2-core machine, beyond the promised bound
WAKE = 0.02  # s: a grant is timed when its task resumes, which a loaded loop delays (as in the tests)
SETTLE = 0.5  # s: achieved rate counts from here on, after ~2,500 calls have been started and queued


def credential(**limit: Any) -> Credential:
    return Credential(
        id="bench",
        provider="rest",
        base_url="http://127.0.0.1",
        auth=BearerAuth(type="bearer", token="bench"),
        rate_limit=RateLimitOverride(**limit),
        timeouts=None,
        ca_bundle=None,
        version=1,
    )


def pacer_for(backend: str, redis_url: str, prefix: str) -> GatewayPacer:
    pacing = {"backend": backend, "redis_url": redis_url, "key_prefix": prefix, "on_backend_error": "reject"}
    return GatewayPacer(Config.model_validate({"pacing": pacing}), Metrics())


# --- roles ---------------------------------------------------------------------------------------


async def upstream_role(opts: argparse.Namespace) -> None:
    """Serve /hit (recorded), /warm (not recorded) and /dump (the records, then forget them).

    This is the measuring instrument, so its garbage collector is off: a collection pause here
    would hold arriving calls in the socket and record them as one burst that never happened.
    """
    gc.disable()
    seen: list[tuple[str, float]] = []

    async def hit(request: web.Request) -> web.Response:
        seen.append((request.headers.get("X-Call", ""), time.time()))
        return web.Response(text="ok")

    async def warm(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def dump(request: web.Request) -> web.Response:
        body = list(seen)
        seen.clear()
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/hit", hit)
    app.router.add_get("/warm", warm)
    app.router.add_get("/dump", dump)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()


async def replica_role(args: argparse.Namespace) -> None:
    """Start calls in an open loop at ``offered`` calls/s from ``start_at``; print (id, started) pairs."""
    pacer = pacer_for(args.backend, args.redis_url, args.prefix)
    await pacer.start()
    cred = credential(rate=RATE, per=PER, burst=BURST, max_wait=120)
    started: list[tuple[str, float]] = []
    granted: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(_get(session, args.url.replace("/hit", "/warm"), "") for _ in range(BURST)))

        async def call(call_id: str) -> None:
            started.append((call_id, time.time()))
            permit = await pacer.acquire(cred, "/hit")
            granted.append(time.time())
            try:
                await _get(session, args.url, call_id)
            finally:
                permit.release()

        await asyncio.sleep(max(0.0, args.start_at - time.time()))
        loop, tasks = asyncio.get_running_loop(), []
        begin, total = loop.time(), int(args.offered * args.duration)
        for k in range(total):
            await asyncio.sleep(max(0.0, begin + k / args.offered - loop.time()))
            tasks.append(asyncio.ensure_future(call(f"{args.index}-{k}")))
        await asyncio.gather(*tasks)
    await pacer.close()
    print(json.dumps({"started": started, "granted": granted}), flush=True)


async def _get(session: aiohttp.ClientSession, url: str, call_id: str) -> None:
    async with session.get(url, headers={"X-Call": call_id}) as response:
        await response.read()


async def shares_role(args: argparse.Namespace) -> None:
    """This replica's part of the priorities scenario; prints every grant (class, tenant, seq, start, grant)."""
    pacer = pacer_for(args.backend, args.redis_url, args.prefix)
    await pacer.start()
    cred = credential(rate=SHARE_RATE, per=PER, burst=1, max_wait=600)
    n, grants, seq = max(1, args.replicas), [], 0
    loop = asyncio.get_running_loop()

    async def call(share: Share) -> None:
        nonlocal seq
        seq += 1
        mine, started = seq, time.time()
        (await pacer.acquire(cred, "/", share=share)).release()
        grants.append((share.priority, share.tenant, args.index, mine, started, time.time()))

    async def every(period: float, share: Share) -> None:
        begin = loop.time() + args.index * period / n  # the replicas take turns
        for k in range(int(args.duration / period)):
            await asyncio.sleep(max(0.0, begin + k * period - loop.time()))
            await call(share)

    await asyncio.sleep(max(0.0, args.start_at - time.time()))
    backlog = int(SHARE_RATE * args.duration / n)  # each flooder alone could fill the whole run
    floods = [Share("normal", t, w) for _ in range(backlog) for t, w in FLOODERS.items()]
    floods += [Share("low", "batch")] * (10 * int(SHARE_RATE) // n)
    queued = [asyncio.ensure_future(call(share)) for share in floods]
    await asyncio.gather(every(0.25 * n, Share("high", "app")), every(0.5 * n, Share("normal", "light")))
    for task in queued:
        task.cancel()
    await asyncio.gather(*queued, return_exceptions=True)
    await pacer.close()
    print(json.dumps({"grants": grants}), flush=True)


async def waiters_role(args: argparse.Namespace) -> None:
    """Park ``waiters`` callers (3 classes x 100 tenants, weights 1-4) on one slow bucket; measure CPU
    while they wait, RSS per waiter, and whether the grants meanwhile came in the scheduler's order."""
    pacer = pacer_for(args.backend, args.redis_url, args.prefix)
    await pacer.start()
    cred = credential(rate=10, per=PER, burst=1, max_wait=1200)
    waiters = args.waiters
    granted: list[tuple[int, int]] = []  # (class, the call's number) in grant order

    async def call(number: int, share: Share) -> None:
        await pacer.acquire(cred, "/", share=share)
        granted.append((share.cls, number))

    shares = [Share(PRIORITIES[i % 3], f"t{i % 100}", 1.0 + i % 4) for i in range(waiters)]
    gc.collect()
    before = _rss()
    tasks = [asyncio.ensure_future(call(i, share)) for i, share in enumerate(shares)]
    deadline = time.monotonic() + 60
    while ((await pacer.describe(cred)) or {}).get("queue_depth", 0) < waiters * 0.98:
        assert time.monotonic() < deadline, "the waiters never queued"
        await asyncio.sleep(0.05)
    gc.collect()
    grown = _rss() - before
    cpu, wall, already = time.process_time(), time.monotonic(), len(granted)
    seconds = 1 if args.quick else 3
    await asyncio.sleep(seconds)
    cpu_share = (time.process_time() - cpu) / (time.monotonic() - wall)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await pacer.close()
    waited = granted[already:]  # granted while all 10,000 were queued: must all be high, FIFO per tenant
    misordered = sum(cls != 0 for cls, _ in waited) + len(
        fifo_inversions([(str(number % 100), number) for _, number in waited])
    )
    result = {
        "cpu_pct": 100 * cpu_share,
        "mib": grown / 2**20,
        "kib_per_waiter": grown / 1024 / waiters,
        "seconds": seconds,
        "granted_while_waiting": len(waited),
        "misordered": misordered,
    }
    print(json.dumps(result), flush=True)


def fifo_inversions(grants: list[tuple[str, int]]) -> list[int]:
    """Positions, among grants (tenant, arrival number) in grant order, of those that came after a later
    arrival of their tenant."""
    last: dict[str, int] = {}
    inversions = []
    for position, (tenant, number) in enumerate(grants):
        if number < last.get(tenant, -1):
            inversions.append(position)
        last[tenant] = max(number, last.get(tenant, -1))
    return inversions


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- the driver ----------------------------------------------------------------------------------


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )


async def scenario(backend: str, replicas: int, url: str, opts: argparse.Namespace) -> dict[str, Any]:
    prefix, offered = f"bench-{uuid.uuid4().hex[:8]}", 2 * RATE / PER
    start_at = time.time() + 3
    common = ["--backend", backend, "--redis-url", opts.redis_url, "--prefix", prefix, "--url", url]
    timing = ["--offered", str(offered / replicas), "--duration", str(opts.duration), "--start-at", str(start_at)]
    procs = [await _spawn("replica", *common, *timing, "--index", str(i)) for i in range(replicas)]
    outputs = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in [await p.communicate() for p in procs]]
    started = dict(pair for out in outputs for pair in out["started"])
    granted = [t for out in outputs for t in out["granted"]]
    async with aiohttp.ClientSession() as session, session.get(url.replace("/hit", "/dump")) as response:
        arrived = dict(await response.json())
    times = sorted(arrived.values())
    extra = _extra_waits(started, arrived)
    return {
        "backend": backend,
        "replicas": replicas,
        "calls": len(arrived),
        "offered_per_s": offered,
        "achieved_pct": 100 * (len(times) - BURST) / (times[-1] - times[0]) / (RATE / PER),
        "worst_excess": worst_excess(times, rate=RATE, per=PER, burst=BURST),
        "worst_excess_at_grant": worst_excess(granted, rate=RATE, per=PER, burst=BURST),
        "extra_wait_p50_ms": 1000 * statistics.median(extra),
        "extra_wait_p99_ms": 1000 * statistics.quantiles(extra, n=100)[98],
    }


def _extra_waits(started: dict[str, float], arrived: dict[str, float]) -> list[float]:
    """Arrival minus the ideal slot (exact GCRA with the configured burst, FIFO by start time)."""
    interval, tat, extra = PER / RATE, 0.0, []
    for call_id, t in sorted(started.items(), key=lambda item: item[1]):
        ideal = max(t, tat - (BURST - 1) * interval)
        tat = max(tat, ideal) + interval
        extra.append(arrived[call_id] - ideal)
    return extra


async def priorities(backend: str, replicas: int, opts: argparse.Namespace) -> dict[str, Any]:
    """The priorities scenario on ``replicas`` processes sharing one bucket: order, shares and waits."""
    prefix, start_at = f"bench-{uuid.uuid4().hex[:8]}", time.time() + 3
    common = ["--backend", backend, "--redis-url", opts.redis_url, "--prefix", prefix, "--replicas", str(replicas)]
    timing = ["--duration", str(mix_seconds(opts)), "--start-at", str(start_at)]
    procs = [await _spawn("shares", *common, *timing, "--index", str(i)) for i in range(replicas)]
    outs = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in [await p.communicate() for p in procs]]
    grants = sorted((g for out in outs for g in out["grants"]), key=lambda g: g[5])
    times = [g[5] for g in grants]
    settled = [t for t in times if t >= times[0] + SETTLE]
    waits = {cls: [g[5] - g[4] for g in grants if g[0] == cls] for cls in PRIORITIES}
    flooders = [g[1] for g in grants if g[1] in FLOODERS]
    total = sum(FLOODERS.values())
    shares = {
        tenant: [100 * Counter(flooders[i : i + 100])[tenant] / 100 for i in range(len(flooders) - 99)]
        for tenant in FLOODERS
    }
    # The bound is promised with the backlog queued: calls started while the 2,500 arrivals were still
    # being queued (on Redis: in batches of 32 script calls) wait behind that work, not behind slots.
    late = [g for g in grants if g[4] >= times[0] + SETTLE]
    high = [g[5] - g[4] for g in late if g[1] == "app"]
    inverted_at: list[float] = []  # grant times of the FIFO inversions
    for index in range(replicas):
        mine = [g for g in grants if g[2] == index]
        inverted_at += [mine[i][5] for i in fifo_inversions([(f"{g[0]}/{g[1]}", g[3]) for g in mine])]
    light = [g[5] - g[4] for g in late if g[1] == "light"]
    interval = PER / SHARE_RATE
    return {
        "backend": backend,
        "replicas": replicas,
        "grants": len(grants),
        "achieved_pct": 100 * (len(settled) - 1) / (settled[-1] - settled[0]) / (SHARE_RATE / PER),
        "worst_excess_at_grant": worst_excess(times, rate=SHARE_RATE, per=PER, burst=1, slack=WAKE),
        "wait_ms": {cls: _percentiles(w) for cls, w in waits.items()},
        "high_max_ms": 1000 * max(high),
        "light_max_ms": 1000 * max(light),
        "high_p50_ms": 1000 * statistics.median(high),
        "light_p50_ms": 1000 * statistics.median(light),
        "bound_ms": 1000 * (2 * interval + 0.05),
        "shares_pct": {t: [min(shares[t]), max(shares[t]), 100 * w / total] for t, w in FLOODERS.items()},
        # [all, from SETTLE on]; per replica: its calls' numbers are in its own arrival order
        "fifo_inversions": [sum(1 for t in inverted_at if t >= when) for when in (0.0, times[0] + SETTLE)],
    }


def mix_seconds(opts: argparse.Namespace) -> float:
    """The priorities scenario runs at least 5 s, so that the shares span some 100 windows of 100 grants."""
    return max(float(opts.duration), 5.0)


def _percentiles(values: list[float]) -> list[float] | None:
    """[p50, p99] in ms, or None when nothing of the class was granted."""
    if len(values) < 2:
        return [1000 * v for v in values * 2] or None
    return [1000 * statistics.median(values), 1000 * statistics.quantiles(values, n=100)[98]]


def priority_failures(run: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The issue-14 guarantees this run broke: (failures, known defects reported without failing)."""
    name = f"{run['backend']} x{run['replicas']}"
    failures: list[str] = []
    known: list[str] = []
    if run["worst_excess_at_grant"] > 1e-6:
        failures.append(f"{name}: the limit was exceeded at grant")
    # FIFO is gated everywhere: on Redis a replica's calls of one tenant and class take their lane's
    # slots in arrival order even when a slot is woken up for too late (shared_queue.py). The shares
    # with 3 replicas are reported, not gated: a late slot given back rejoins at its place, but its
    # 100-grant window on a loaded machine was seen off by a few points before lanes, and has not
    # been measured enough since to promise it.
    order = failures
    shares = known if run["backend"] == "redis" and run["replicas"] > 1 else failures
    if run["fifo_inversions"][1]:  # from SETTLE on, like the waits
        order.append(f"{name}: {run['fifo_inversions'][1]} FIFO inversions within a tenant and class")
    for tenant, (low, high, expected) in run["shares_pct"].items():
        if low < expected - SHARE_TOLERANCE or high > expected + SHARE_TOLERANCE:
            shares.append(f"{name}: tenant {tenant} got {low:.0f}-{high:.0f}% of 100 grants, not {expected:.0f}% ± 5")
    # Local: every high and light call within the bound. Redis: their median, because on a shared box
    # a Redis round trip now and then takes a few hundred ms (measured: docs/performance.md); a call
    # that is not overtaking, or a tenant not served within its round, moves the median too.
    gate = "max" if run["backend"] == "local" else "p50"
    for what in ("high", "light"):
        waited = run[f"{what}_{gate}_ms"]
        if waited > run["bound_ms"] + 1000 * NOISE:
            failures.append(f"{name}: {what} calls waited {waited:.0f} ms ({gate}), over 2 intervals + 50 ms")
    return failures, known


async def waiting_cost(backend: str, opts: argparse.Namespace) -> dict[str, Any]:
    sizes = ["--waiters", str(opts.waiters), *(["--quick"] if opts.quick else [])]
    where = ["--backend", backend, "--redis-url", opts.redis_url, "--prefix", uuid.uuid4().hex]
    proc = await _spawn("waiters", *where, *sizes)
    out, _ = await proc.communicate()
    return {"backend": backend, **json.loads(out.decode().strip().splitlines()[-1])}


async def overhead(backend: str, opts: argparse.Namespace) -> dict[str, Any]:
    """Cost of one acquire when nothing has to wait: one at a time, and 5,000 at once."""
    pacer = pacer_for(backend, opts.redis_url, f"bench-{uuid.uuid4().hex[:8]}")
    await pacer.start()
    cred, n = credential(rate=1e9, burst=10**6, max_wait=600), 500 if opts.quick else 5_000
    began = time.perf_counter()
    for _ in range(n):
        (await pacer.acquire(cred, "/")).release()
    sequential = (time.perf_counter() - began) / n
    began = time.perf_counter()
    await asyncio.gather(*(pacer.acquire(cred, "/") for _ in range(n)))
    concurrent = (time.perf_counter() - began) / n
    await pacer.close()
    return {"backend": backend, "sequential_us": 1e6 * sequential, "concurrent_us": 1e6 * concurrent}


async def main(opts: argparse.Namespace) -> None:
    upstream = await _spawn("upstream")
    assert upstream.stdout is not None
    url = f"http://127.0.0.1:{int(await upstream.stdout.readline())}/hit"
    try:
        shapes = (("local", 1), ("redis", 1)) if opts.quick else (("local", 1), ("redis", 1), ("redis", 3))
        runs = [await scenario(b, n, url, opts) for b, n in shapes]
        mixes = [await priorities(b, n, opts) for b, n in shapes]
        waits = [await waiting_cost(b, opts) for b in (("local",) if opts.quick else ("local", "redis"))]
        costs = [await overhead(b, opts) for b in ("local", "redis")]
    finally:
        upstream.terminate()
        await upstream.wait()
    print_table(runs, waits, costs, opts)
    print_priorities(mixes, opts)
    if opts.json:
        result = {"limit": [RATE, PER, BURST], "runs": runs, "priorities": mixes, "waiting": waits, "overhead": costs}
        Path(opts.json).write_text(json.dumps(result, indent=2))
    broken = [
        f"{r['backend']} x{r['replicas']}: the limit was exceeded at grant"
        for r in runs
        if r["worst_excess_at_grant"] > 1e-6
    ]
    checked = [priority_failures(run) for run in mixes]
    broken += [failure for failures, _ in checked for failure in failures]
    known = [defect for _, defects in checked for defect in defects]
    if known:
        print("\nreported, not gated (shares across Redis replicas under load):\n" + "\n".join(known))
    broken += [
        f"{w['backend']}: {w['misordered']} grants out of order among the waiters" for w in waits if w["misordered"]
    ]
    broken += [
        f"{w['backend']}: {w['granted_while_waiting']} grants in {w['seconds']:g} s at 10/s among the waiters"
        for w in waits
        if w["granted_while_waiting"] < 10 * w["seconds"] / 2
    ]
    if broken:
        sys.exit("guarantees broken:\n" + "\n".join(broken))


def print_table(
    runs: list[dict[str, Any]], waits: list[dict[str, Any]], costs: list[dict[str, Any]], opts: argparse.Namespace
) -> None:
    print(f"limit {RATE:g}/{PER:g}s burst {BURST}, offered 2x for {opts.duration:g}s (open loop)\n")
    print("| backend | replicas | calls | offered/s | achieved % | worst excess at upstream / at grant ", end="")
    print("| extra wait p50 / p99 |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r['backend']} | {r['replicas']} | {r['calls']} | {r['offered_per_s']:.0f} | {r['achieved_pct']:.2f} | "
            f"{max(0.0, r['worst_excess']):.2f} / {max(0.0, r['worst_excess_at_grant']):.2f} | "
            f"{r['extra_wait_p50_ms']:.1f} ms / {r['extra_wait_p99_ms']:.1f} ms |"
        )
    print(f"\n| backend | {opts.waiters:,} waiters (3 classes, 100 tenants): CPU % of a core | RSS growth ", end="")
    print("| per waiter | grants while waiting / out of order |")
    print("|---|---|---|---|---|")
    for w in waits:
        print(
            f"| {w['backend']} | {w['cpu_pct']:.2f} | {w['mib']:.1f} MiB | {w['kib_per_waiter']:.2f} KiB | "
            f"{w['granted_while_waiting']} / {w['misordered']} |"
        )
    many = 500 if opts.quick else 5000
    print(f"\n| backend | acquire without waiting: one at a time | {many:,} at once (per call) |")
    print("|---|---|---|")
    for c in costs:
        print(f"| {c['backend']} | {c['sequential_us']:.0f} µs | {c['concurrent_us']:.0f} µs |")


def print_priorities(mixes: list[dict[str, Any]], opts: argparse.Namespace) -> None:
    weights = ", ".join(f"{t} {w:g}" for t, w in FLOODERS.items())
    print(f"\npriorities: {SHARE_RATE:g}/s burst 1 for {mix_seconds(opts):g}s; normal: flooders ({weights}) + light")
    print("1/0.5s; low: 10 s of backlog; high: 1/0.25s. Shares: min-max over every 100 flooder grants;")
    print(f"Achieved and the high/light max from {SETTLE:g}s on (backlog queued); excess at grant with ", end="")
    print(f"{1000 * WAKE:g} ms of wake-up slack.\n")
    print("| backend | replicas | achieved % | excess at grant | wait p50 / p99: high | normal | low ", end="")
    print("| high p50 / max, light p50 / max (bound) | shares % (expected) | FIFO inversions: all / after settle |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in mixes:
        waits = [
            "—" if r["wait_ms"][cls] is None else f"{r['wait_ms'][cls][0]:.0f} / {r['wait_ms'][cls][1]:.0f} ms"
            for cls in PRIORITIES
        ]
        shares = ", ".join(f"{t} {lo:.0f}-{hi:.0f} ({exp:.0f})" for t, (lo, hi, exp) in r["shares_pct"].items())
        print(
            f"| {r['backend']} | {r['replicas']} | {r['achieved_pct']:.2f} | "
            f"{max(0.0, r['worst_excess_at_grant']):.2f} | "
            f"{' | '.join(waits)} | {r['high_p50_ms']:.0f} / {r['high_max_ms']:.0f}, "
            f"{r['light_p50_ms']:.0f} / {r['light_max_ms']:.0f} ms ({r['bound_ms']:.0f}) | "
            f"{shares} | {r['fifo_inversions'][0]} / {r['fifo_inversions'][1]} |"
        )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", default="main", choices=list(ROLES))
    parser.add_argument("--json", help="also write the results as JSON to this path")
    parser.add_argument("--redis-url", default=os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of 2x offered load per scenario")
    for name in ("--backend", "--prefix", "--url"):
        parser.add_argument(name, default="")
    for name in ("--offered", "--start-at"):
        parser.add_argument(name, type=float, default=0.0)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a short run for CI: 1 s scenarios, fewer waiters")
    parser.add_argument("--waiters", type=int, default=WAITERS, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.quick and opts.role == "main":
        opts.duration, opts.waiters = min(opts.duration, 1.0), min(opts.waiters, 1_000)
    return opts


ROLES = {
    "main": main,
    "upstream": upstream_role,
    "replica": replica_role,
    "shares": shares_role,
    "waiters": waiters_role,
}

if __name__ == "__main__":
    options = parse(sys.argv[1:])
    asyncio.run(ROLES[options.role](options))
