"""Mutation throughput under pacing: 10 requests of 1,000 creates per provider against the sandboxes.

    python -m bench.mutations [--quick] [--providers salesforce,hubspot,airtable] [--requests 10] [--rate 25]
                              [--json PATH]

The sandbox runs in a child process (its rate limit off), so the CPU time measured in this process
is the gateway's own (plus the tiny bench client). The credential is paced at ``--rate`` calls/s with
burst 1, so the pacing-bound wall time of N upstream calls is (N - 1) / rate; a good run is within 10%.
The ``--requests`` requests of one run are sent concurrently, as a client with a batch to apply would.
``--quick`` (CI) sends 2 requests of 50 records at 100 calls/s: every path runs in a few seconds. The
exit code is 1 when a provider made another number of upstream calls than its batching promises.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import multiprocessing
import tempfile
import time
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app import create_app
from gateway.config import Config
from gateway.domain.models import CredentialIn, SyncIn, TokenIn
from gateway.http import appkeys
from gateway.observability.logs import configure_logging
from gateway.runtime import install_uvloop
from gateway.sandbox.common import SANDBOX, Knobs
from gateway.sandbox.runner import run_sandbox
from gateway.vault.crypto import Keyring, generate_key
from tests.mutations.harness import SPECS

READ_BACK = {"salesforce": True, "hubspot": True, "airtable": False, "stripe": False}
# Records per write call: Salesforce sends up to 1,000 as one all-or-none Composite call (5 collections of
# 200) and reads them back in one Composite call of GETs.
CHUNK = {"salesforce": 1000, "hubspot": 100, "airtable": 10, "stripe": 1}


def _serve_sandbox(provider: str, pipe: Any) -> None:
    async def main() -> None:
        app = importlib.import_module(SPECS[provider].module).create_app(knobs=Knobs())
        async with run_sandbox(app) as base_url:
            pipe.send(base_url)
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)  # until the parent says stop
            pipe.send(len(app[SANDBOX].requests))

    asyncio.run(main())


def _record(provider: str, i: int) -> dict[str, Any]:
    email = f"user{i}@arrakis.org"
    return {
        "salesforce": {"LastName": f"Fremen{i}", "Email": email},
        "hubspot": {"lastname": f"Fremen{i}", "email": email},
        "airtable": {"Name": f"Fremen{i}", "Email": email},
        "stripe": {"name": f"Fremen{i}", "email": email},
    }[provider]


async def _bench(provider: str, *, requests: int, size: int, rate: float) -> dict[str, Any]:
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("spawn").Process(target=_serve_sandbox, args=(provider, child), daemon=True)
    proc.start()
    base_url = parent.recv()
    with tempfile.TemporaryDirectory() as tmp:
        keyring = Keyring.parse(generate_key("bench"))
        config = Config.model_validate(
            {
                "store": {"url": f"sqlite:///{tmp}/gw.db", "auto_migrate": True},
                "log": {"format": "json", "level": "warning"},
            }
        )
        app = create_app(config, keyring=keyring, ops_on_main=True)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/mutations/run"
        spec = SPECS[provider]
        await app[appkeys.OBJECTS].create_credential(
            CredentialIn.model_validate(
                {
                    "id": "cred",
                    "provider": provider,
                    "base_url": base_url,
                    "auth": spec.auth,
                    "rate_limit": {"rate": rate, "per": 1, "burst": 1, "max_wait": 600},
                }
            )
        )
        await app[appkeys.OBJECTS].create_sync(
            SyncIn(id="bench", credential_id="cred", collections=[spec.collection], options=spec.options)
        )
        token = await app[appkeys.TOKENS].create(TokenIn(name="bench", scopes=["mutations"]))
        try:
            result = await _drive(url, token, provider, spec.collection, requests=requests, size=size)
        finally:
            await runner.cleanup()
    parent.send("stop")
    upstream_calls = parent.recv()
    proc.join(5)
    calls = requests * math.ceil(size / CHUNK[provider]) * (2 if READ_BACK[provider] else 1)
    ideal = (calls - 1) / rate
    records = requests * size
    return {
        "provider": provider,
        "records": records,
        "upstream_calls": upstream_calls,
        "expected_calls": calls,
        "wall_s": round(result["wall"], 3),
        "pacing_bound_s": round(ideal, 3),
        "ratio": round(result["wall"] / ideal, 3),
        "gateway_cpu_ms_per_record": round(result["cpu"] * 1000 / records, 3),
    }


async def _drive(url: str, token: str, provider: str, collection: str, *, requests: int, size: int) -> dict[str, float]:
    """One run: ``requests`` POSTs of ``size`` creates sent at once, as a client firing a batch would.

    Sent one after another, each request's own gateway CPU (parsing, the stream append, the merge)
    would add to the paced time; sent together, the pacer always has a call waiting, so the wall
    time is the pacing bound plus the CPU of the last call. Bodies are encoded before the clock
    starts, so the CPU measured is the gateway's (the client's share is only the HTTP exchange).
    """
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    bodies = [
        json.dumps(
            {
                "kind": "create",
                "sync_id": "bench",
                "collection_id": collection,
                "records": [{"data": _record(provider, r * size + i)} for i in range(size)],
            }
        ).encode()
        for r in range(requests)
    ]

    async def post(session: aiohttp.ClientSession, r: int) -> None:
        async with session.post(url, data=bodies[r], headers=headers) as resp:
            answer = await resp.json()
            if resp.status != 200 or len(answer["records"]) != size:
                raise SystemExit(f"{provider}: request {r} failed: {resp.status} {str(answer)[:300]}")

    connector = aiohttp.TCPConnector(limit=requests)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=900)) as session:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(post(session, r) for r in range(requests)))
        return {"wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", default="salesforce,hubspot,airtable")
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=25)
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--quick", action="store_true", help="2 requests of 50 records at 100/s (CI)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.size, args.rate = 2, 50, 100.0
    configure_logging(format="console", level="warning")  # the table is the output
    install_uvloop()  # the event loop `gateway serve` runs on
    rows = [
        asyncio.run(_bench(p, requests=args.requests, size=args.size, rate=args.rate))
        for p in args.providers.split(",")
    ]
    print(f"{'provider':<11} {'records':>7} {'calls':>6} {'wall s':>8} {'bound s':>8} {'ratio':>6} {'cpu ms/rec':>10}")
    for row in rows:
        print(
            f"{row['provider']:<11} {row['records']:>7} {row['upstream_calls']:>6} {row['wall_s']:>8} "
            f"{row['pacing_bound_s']:>8} {row['ratio']:>6} {row['gateway_cpu_ms_per_record']:>10}"
        )
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump({"rate": args.rate, "results": rows}, fh, indent=2)
    wrong = [r["provider"] for r in rows if r["upstream_calls"] != r["expected_calls"]]
    if wrong:
        raise SystemExit(f"upstream calls differ from the batching promise: {', '.join(wrong)}")


if __name__ == "__main__":
    main()
