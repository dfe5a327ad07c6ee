"""The web console's cost: the overview with 1,000 credentials, and live updates to 10 open consoles.

    python -m bench.console [--credentials 1000] [--consoles 10] [--seconds 30] [--quick] [--json PATH]

The gateway runs in a child process (SQLite store, local pacing) so that the CPU time measured is
its own, not the bench client's. Two numbers, each against its target:

- render: the gateway process's CPU time for one ``GET /console`` with N credentials (its server
  time without the waits for a CPU that a loaded machine adds; the client's round trip, transfer
  included, is printed beside it). Target < 300 ms.
- live: the gateway's extra CPU while ``--consoles`` event streams are open (each reading the state
  of all N credentials every second), minus its CPU when idle for as long, as a share of one core.
  Target < 2%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import statistics
import tempfile
import time
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app import create_app
from gateway.config import Config
from gateway.domain.models import CredentialIn, TokenIn
from gateway.http import appkeys
from gateway.observability.logs import configure_logging
from gateway.vault.crypto import Keyring, generate_key

TARGET_RENDER_MS = 300.0
TARGET_LIVE_CORE = 0.02


def _serve(credentials: int, pipe: Any) -> None:
    """The child: a gateway with ``credentials`` credentials; answers "cpu" with its CPU seconds."""

    async def main() -> None:
        key = generate_key("bench")
        folder = tempfile.mkdtemp(prefix="gw-bench-console-")
        config = Config.model_validate(
            {
                "store": {"url": f"sqlite:///{folder}/gateway.db", "auto_migrate": True},
                "encryption": {"keys": key},
                "log": {"format": "json", "level": "warning"},
            }
        )
        configure_logging(format="json", level="warning")
        app = create_app(config, keyring=Keyring.parse(key), ops_on_main=True)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        objects = app[appkeys.OBJECTS]
        for i in range(credentials):
            auth = {"type": "bearer", "token": f"secret-{i}"}
            body = {"id": f"cred-{i:04d}", "provider": "rest", "base_url": "https://api.example.com", "auth": auth}
            await objects.create_credential(CredentialIn.model_validate(body))
        token = await app[appkeys.TOKENS].create(TokenIn(name="bench", scopes=["admin"]))
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        pipe.send((f"http://127.0.0.1:{port}", token))
        loop = asyncio.get_running_loop()
        while (await loop.run_in_executor(None, pipe.recv)) == "cpu":
            pipe.send(time.process_time())
        await runner.cleanup()

    asyncio.run(main())


async def _sign_in(session: aiohttp.ClientSession, base: str, token: str) -> None:
    page = await (await session.get(f"{base}/console/signin")).text()
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None
    resp = await session.post(f"{base}/console/signin", data={"csrf": match.group(1), "token": token})
    assert resp.status == 200 and resp.url.path == "/console", resp.status


async def _render_ms(
    session: aiohttp.ClientSession, base: str, pipe: Any, times: int
) -> tuple[list[float], list[float]]:
    """Round trips seen by the client, and the gateway process's CPU time for each render (ms)."""
    await (await session.get(f"{base}/console")).read()  # warm-up: first describe of every bucket
    walls, cpus = [], []
    for _ in range(times):
        cpu, started = _cpu(pipe), time.perf_counter()
        resp = await session.get(f"{base}/console")
        body = await resp.read()
        walls.append((time.perf_counter() - started) * 1000)
        cpus.append((_cpu(pipe) - cpu) * 1000)
        assert resp.status == 200 and b"cred-0000" in body
    return walls, cpus


async def _read_events(session: aiohttp.ClientSession, base: str, stop: asyncio.Event, counts: list[int]) -> None:
    async with session.get(f"{base}/console/events", timeout=aiohttp.ClientTimeout(total=None)) as resp:
        assert resp.content_type == "text/event-stream"
        index = len(counts)
        counts.append(0)
        while not stop.is_set():
            await resp.content.readuntil(b"\n\n")
            counts[index] += 1


def _recv(pipe: Any, timeout: float = 300) -> Any:
    """The child's answer, or an error if it died or hung (never block the bench forever)."""
    if not pipe.poll(timeout):
        raise RuntimeError("the gateway process did not answer")
    return pipe.recv()


def _cpu(pipe: Any) -> float:
    pipe.send("cpu")
    return float(_recv(pipe, 10))


async def _live_core(
    session: aiohttp.ClientSession, base: str, pipe: Any, consoles: int, seconds: float
) -> dict[str, Any]:
    idle_start = _cpu(pipe)
    await asyncio.sleep(seconds)
    idle = _cpu(pipe) - idle_start
    stop, counts = asyncio.Event(), []
    readers = [asyncio.create_task(_read_events(session, base, stop, counts)) for _ in range(consoles)]
    await asyncio.sleep(2)  # every stream open and the producer running
    busy_start, events_start = _cpu(pipe), sum(counts)
    await asyncio.sleep(seconds)
    busy, events = _cpu(pipe) - busy_start, sum(counts) - events_start
    stop.set()
    for reader in readers:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return {
        "idle_core": idle / seconds,
        "busy_core": busy / seconds,
        "live_core": (busy - idle) / seconds,
        "events": events,
    }


async def run(credentials: int, consoles: int, seconds: float, renders: int) -> dict[str, Any]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_serve, args=(credentials, child), daemon=True)
    process.start()
    try:
        base, token = _recv(parent)
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            await _sign_in(session, base, token)
            walls, cpus = await _render_ms(session, base, parent, renders)
            live = await _live_core(session, base, parent, consoles, seconds)
        parent.send("stop")
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    return {
        "credentials": credentials,
        "consoles": consoles,
        "seconds": seconds,
        "render_cpu_ms_median": round(statistics.median(cpus), 1),
        "render_cpu_ms_max": round(max(cpus), 1),
        "render_wall_ms_median": round(statistics.median(walls), 1),
        "load_average": round(os.getloadavg()[0], 1),
        **{name: round(value, 4) if isinstance(value, float) else value for name, value in live.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--credentials", type=int, default=1000)
    parser.add_argument("--consoles", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="5 s of live streams, 5 renders (CI)")
    parser.add_argument("--json", help="write the result to this file")
    args = parser.parse_args()
    seconds, renders = (5.0, 5) if args.quick else (args.seconds, 20)
    result = asyncio.run(run(args.credentials, args.consoles, seconds, renders))
    ok_render = result["render_cpu_ms_median"] < TARGET_RENDER_MS
    ok_live = result["live_core"] < TARGET_LIVE_CORE
    print(f"{'measure':<34} {'value':>10} {'target':>10}  ok")
    print(f"{'overview render, server CPU (ms)':<34} {result['render_cpu_ms_median']:>10} {'< 300':>10}  {ok_render}")
    print(f"{'  slowest render, server CPU (ms)':<34} {result['render_cpu_ms_max']:>10}")
    print(f"{'  round trip seen by client (ms)':<34} {result['render_wall_ms_median']:>10}")
    print(f"{'live, extra share of a core':<34} {result['live_core']:>10.2%} {'< 2%':>10}  {ok_live}")
    print(f"{'  idle / with consoles':<34} {result['idle_core']:>10.2%} {result['busy_core']:>10.2%}")
    print(f"{'  events received':<34} {result['events']:>10}")
    print(
        f"({result['credentials']} credentials, {result['consoles']} consoles, {result['seconds']} s; "
        f"load average {result['load_average']} on {os.cpu_count()} cores)"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    if not (ok_render and ok_live):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
