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
- waiting: CPU (% of one core) and memory (RSS) of a pacer process while 10,000 callers wait
  (on a 10/s bucket, so the measured seconds are mostly waiting, with 10 grants/s);
- overhead: the time one ``acquire`` takes when nothing has to wait (Redis: one round trip, shared
  by every call queued in the same tick).

``--quick`` (CI) runs 1 s of load on one local and one Redis replica, 1,000 waiters for 1 s and 500
acquires: numbers too rough to quote, but every code path runs. Either way the exit code is 1 when a
scenario's grants broke the limit (excess at grant above 0).
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

RATE, PER, BURST = 200.0, 1.0, 20
WAITERS = 10_000


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


async def waiters_role(args: argparse.Namespace) -> None:
    """Park ``waiters`` callers on one slow bucket; measure CPU while they wait and RSS per waiter."""
    pacer = pacer_for(args.backend, args.redis_url, args.prefix)
    await pacer.start()
    cred = credential(rate=10, per=PER, burst=1, max_wait=1200)
    waiters = args.waiters
    gc.collect()
    before = _rss()
    tasks = [asyncio.ensure_future(pacer.acquire(cred, "/")) for _ in range(waiters)]
    deadline = time.monotonic() + 30
    while ((await pacer.describe(cred)) or {}).get("queue_depth", 0) < waiters * 0.98:
        assert time.monotonic() < deadline, "the waiters never queued"
        await asyncio.sleep(0.05)
    gc.collect()
    grown = _rss() - before
    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.sleep(1 if args.quick else 3)
    cpu_share = (time.process_time() - cpu) / (time.monotonic() - wall)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await pacer.close()
    result = {"cpu_pct": 100 * cpu_share, "mib": grown / 2**20, "kib_per_waiter": grown / 1024 / waiters}
    print(json.dumps(result), flush=True)


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
    cred, n = credential(rate=1e9, burst=10**6), 500 if opts.quick else 5_000
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
        waits = [await waiting_cost(b, opts) for b in (("local",) if opts.quick else ("local", "redis"))]
        costs = [await overhead(b, opts) for b in ("local", "redis")]
    finally:
        upstream.terminate()
        await upstream.wait()
    print_table(runs, waits, costs, opts)
    if opts.json:
        result = {"limit": [RATE, PER, BURST], "runs": runs, "waiting": waits, "overhead": costs}
        Path(opts.json).write_text(json.dumps(result, indent=2))
    broken = [f"{r['backend']} x{r['replicas']}" for r in runs if r["worst_excess_at_grant"] > 1e-6]
    if broken:
        sys.exit(f"the limit was exceeded at grant: {', '.join(broken)}")


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
    print(f"\n| backend | {opts.waiters:,} waiters: CPU % of a core | RSS growth | per waiter |")
    print("|---|---|---|---|")
    for w in waits:
        print(f"| {w['backend']} | {w['cpu_pct']:.2f} | {w['mib']:.1f} MiB | {w['kib_per_waiter']:.2f} KiB |")
    many = 500 if opts.quick else 5000
    print(f"\n| backend | acquire without waiting: one at a time | {many:,} at once (per call) |")
    print("|---|---|---|")
    for c in costs:
        print(f"| {c['backend']} | {c['sequential_us']:.0f} µs | {c['concurrent_us']:.0f} µs |")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", default="main", choices=["main", "upstream", "replica", "waiters"])
    parser.add_argument("--json", help="also write the results as JSON to this path")
    parser.add_argument("--redis-url", default=os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of 2x offered load per scenario")
    for name in ("--backend", "--prefix", "--url"):
        parser.add_argument(name, default="")
    for name in ("--offered", "--start-at"):
        parser.add_argument(name, type=float, default=0.0)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a short run for CI: 1 s scenarios, fewer waiters")
    parser.add_argument("--waiters", type=int, default=WAITERS, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.quick and opts.role == "main":
        opts.duration, opts.waiters = min(opts.duration, 1.0), min(opts.waiters, 1_000)
    return opts


ROLES = {"main": main, "upstream": upstream_role, "replica": replica_role, "waiters": waiters_role}

if __name__ == "__main__":
    options = parse(sys.argv[1:])
    asyncio.run(ROLES[options.role](options))
