"""Sync throughput and lag against the sandboxes: backfill speed, its pacing overhead, change-to-ack lag.

    python -m bench.sync [--providers salesforce,hubspot,stripe,airtable] [--records 5000] [--lag-samples 20]
                         [--json PATH] [--quick]

Per provider, three runs on a fresh gateway (SQLite store) whose sandbox runs in a child process
(limits off), so the CPU time measured here is the gateway's:

- backfill, pacing off: records/s from the sync's creation until it is live, and gateway CPU per record;
- backfill at the provider's realistic limit (burst 1, ``max_share`` 1): wall time over the pacing floor
  ``(calls - 1) / rate`` of the calls it made (target <= 1.1);
- lag at ``poll_interval = 1`` s: a record created in the sandbox directly until a pull consumer has
  received and acknowledged its event (target p50 <= 1.5 s).

``--quick`` (CI) sizes each provider's backfill for a pacing floor of about 1 s at its realistic
limit (``QUICK_RECORDS``), so the ratio measures pacing rather than the sync's start, and takes 3 lag
samples. The exit status is non-zero only when a backfill does not bring every record (or never goes
live); the ratio and lag are targets, printed, not checked.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import multiprocessing
import statistics
import tempfile
import time
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import TypeAdapter
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.config import Config
from gateway.domain.models import ConsumerIn, CredentialIn, SyncIn, TokenIn
from gateway.http import appkeys
from gateway.observability.logs import configure_logging
from gateway.runtime import install_uvloop
from gateway.sandbox.common import SANDBOX, Knobs
from gateway.sandbox.runner import run_sandbox
from gateway.server import settle_heap
from gateway.store import tables as t
from gateway.vault.crypto import Keyring, generate_key
from tests.mutations.harness import SPECS
from tests.syncs.harness import OBJECT

# Published per-credential limits as calls per second (docs/pacing.md): Salesforce 25/s, HubSpot 100 per
# 10 s, Stripe 100/s, Airtable 5/s per base.
REALISTIC = {"salesforce": 25.0, "hubspot": 10.0, "stripe": 100.0, "airtable": 5.0}
# --quick: records for a pacing floor of about 1 s at REALISTIC. With a fixed 300 records Stripe's floor
# was 20 ms, less than the sync's own start and end (about 40 ms: the credential, the sync, the first
# read; the last commit and the round's).
QUICK_RECORDS = {"salesforce": 4_000, "hubspot": 1_100, "stripe": 10_000, "airtable": 600}
LIVE_DEADLINE = 900.0


def _serve_sandbox(provider: str, records: int, pipe: Any) -> None:
    async def main() -> None:
        app = importlib.import_module(SPECS[provider].module).create_app(knobs=Knobs())
        state = app[SANDBOX]
        for i in range(records):
            state.change(OBJECT[provider], "create", None, _sample(provider, i))
        async with run_sandbox(app) as base_url:
            pipe.send(base_url)
            while (message := await asyncio.get_running_loop().run_in_executor(None, pipe.recv)) != "stop":
                pipe.send(len(state.requests) if message == "count" else None)

    asyncio.run(main())


def _sample(provider: str, i: int) -> dict[str, Any]:
    field = {"salesforce": "LastName", "hubspot": "lastname", "stripe": "name", "airtable": "Name"}[provider]
    return {field: f"Bench{i:06d}"}


class Run:
    """One gateway and one sandbox child process for one measurement."""

    def __init__(self, provider: str, records: int) -> None:
        self.provider, self.records = provider, records
        self.parent, child = multiprocessing.Pipe()
        self.proc = multiprocessing.get_context("spawn").Process(
            target=_serve_sandbox, args=(provider, records, child), daemon=True
        )
        self.tmp = tempfile.TemporaryDirectory()

    async def __aenter__(self) -> Run:
        self.proc.start()
        self.base_url = self.parent.recv()
        config = Config.model_validate(
            {
                "store": {"url": f"sqlite:///{self.tmp.name}/gw.db", "auto_migrate": True},
                "log": {"format": "json", "level": "warning"},
                "stream": {"capture_lease_ttl": 3},
            }
        )
        self.app = create_app(config, keyring=Keyring.parse(generate_key("bench")), ops_on_main=True)
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        settle_heap()  # as `gateway serve` does once started: the long-lived objects leave the collector's reach
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.runner.cleanup()
        self.parent.send("stop")
        self.proc.join(5)
        self.tmp.cleanup()

    def upstream_calls(self) -> int:
        self.parent.send("count")
        return int(self.parent.recv())

    async def sync(self, rate: float, poll_interval: float = 10) -> None:
        spec, objects = SPECS[self.provider], self.app[appkeys.OBJECTS]
        limit = {"rate": rate, "per": 1, "burst": 1, "max_wait": 600}
        await objects.create_credential(
            CredentialIn.model_validate(
                {
                    "id": "cred",
                    "provider": self.provider,
                    "base_url": self.base_url,
                    "auth": spec.auth,
                    "rate_limit": limit,
                }
            )
        )
        options = {**spec.options, "max_share": "1", "poll_interval": str(poll_interval)}
        await objects.create_sync(
            SyncIn(id="bench", credential_id="cred", collections=[spec.collection], options=options)
        )
        self.app[appkeys.SYNC_RUNNERS].poke("bench")

    async def check_complete(self) -> None:
        """Exit non-zero unless every upstream record reached the store (the bench's guarantee)."""
        async with self.app[appkeys.ENGINE].connect() as conn:
            stored = (await conn.execute(select(func.count()).select_from(t.records))).scalar()
        if stored != self.records:
            raise SystemExit(f"{self.provider}: {stored} of {self.records} records reached the stream")

    async def until_live(self) -> float:
        """The epoch time the sync went live: its round's last commit (``last_poll_at``), read from the store.

        Reading the end from the store lets the bench poll slowly: polling every 10 ms took about a
        tenth of the gateway's CPU during a backfill, and added up to 10 ms to the end.
        """
        deadline = time.monotonic() + LIVE_DEADLINE
        while (view := await self.app[appkeys.OBJECTS].sync_view("bench")).state != "live":
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.provider}: the backfill did not finish")
            await asyncio.sleep(0.1)  # poll interval of the bench, not a wait for the condition
        assert view.last_poll_at is not None
        return view.last_poll_at.timestamp()


async def backfill(provider: str, records: int, rate: float) -> dict[str, float]:
    async with Run(provider, records) as run:
        before = run.upstream_calls()
        wall0, cpu0 = time.time(), time.process_time()
        await run.sync(rate)
        wall = await run.until_live() - wall0
        cpu = time.process_time() - cpu0
        calls = run.upstream_calls() - before
        await run.check_complete()
    return {"wall": wall, "cpu": cpu, "calls": calls}


async def lag(provider: str, samples: int) -> list[float]:
    """Seconds from a record created in the sandbox to its event acknowledged by a pull consumer."""
    async with Run(provider, 10) as run:
        await run.sync(1000.0, poll_interval=1)
        await run.until_live()
        consumer: Any = {"id": "bench-pull", "kind": "pull", "sync_id": "bench"}
        await run.app[appkeys.OBJECTS].create_consumer(TypeAdapter(ConsumerIn).validate_python(consumer))
        token = await run.app[appkeys.TOKENS].create(TokenIn(name="bench", scopes=["consumers"]))
        headers = {"Authorization": f"Bearer {token}"}
        lags = []
        async with aiohttp.ClientSession() as http:
            for i in range(samples):
                change = {"action": "create", "data": _sample(provider, 100_000 + i)}
                started = time.perf_counter()
                async with http.post(f"{run.base_url}/_sandbox/records/{OBJECT[provider]}", json=change) as resp:
                    assert resp.status == 200
                await _receive_one(http, run.url, headers)
                lags.append(time.perf_counter() - started)
    return lags


async def _receive_one(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
    while True:
        body = {"batch_size": 10, "wait_for": 5000}
        async with http.post(f"{url}/v1/consumers/bench-pull/receive", json=body, headers=headers) as resp:
            data = (await resp.json())["data"]
        if data:
            ack = {"ack_ids": [d["ack_id"] for d in data]}
            async with http.post(f"{url}/v1/consumers/bench-pull/ack", json=ack, headers=headers) as resp:
                assert resp.status == 200
            return


def measure(provider: str, records: int, samples: int) -> dict[str, Any]:
    fast = asyncio.run(backfill(provider, records, 1_000_000.0))
    rate = REALISTIC[provider]
    paced = asyncio.run(backfill(provider, records, rate))
    floor = (paced["calls"] - 1) / rate
    lags = sorted(asyncio.run(lag(provider, samples)))
    return {
        "provider": provider,
        "records": records,
        "records_per_s": round(records / fast["wall"]),
        "cpu_ms_per_record": round(fast["cpu"] * 1000 / records, 3),
        "realistic_rate": rate,
        "paced_calls": paced["calls"],
        "paced_wall_s": round(paced["wall"], 2),
        "pacing_floor_s": round(floor, 2),
        "ratio": round(paced["wall"] / floor, 3) if floor > 0 else None,
        "lag_p50_s": round(statistics.median(lags), 3),
        "lag_max_s": round(lags[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", default="salesforce,hubspot,stripe,airtable")
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--lag-samples", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="CI: QUICK_RECORDS per provider, 3 lag samples")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    if args.quick:
        args.lag_samples = 3
    configure_logging(format="console", level="warning")  # the table is the output
    install_uvloop()  # the event loop `gateway serve` runs on
    providers = args.providers.split(",")
    rows = [measure(p, QUICK_RECORDS[p] if args.quick else args.records, args.lag_samples) for p in providers]
    print(
        f"{'provider':<11} {'records':>7} {'rec/s':>7} {'cpu ms/rec':>10} {'rate/s':>6} {'calls':>5} "
        f"{'wall s':>7} {'floor s':>7} {'ratio':>6} {'lag p50':>7} {'lag max':>7}"
    )
    for r in rows:
        print(
            f"{r['provider']:<11} {r['records']:>7} {r['records_per_s']:>7} {r['cpu_ms_per_record']:>10} "
            f"{r['realistic_rate']:>6} {r['paced_calls']:>5} {r['paced_wall_s']:>7} {r['pacing_floor_s']:>7} "
            f"{r['ratio']!s:>6} {r['lag_p50_s']:>7} {r['lag_max_s']:>7}"
        )
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump({"results": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
