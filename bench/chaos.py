"""Chaos on real processes: four scenarios, each with a table and an exit status that says whether it held.

    python -m bench.chaos [--quick] [--scenario kill|rotation|webhook|syncs ...] [--rounds 100]
                          [--rotation-rounds 20] [--outage 120] [--max-backoff 60] [--clients 4]
                          [--sync-rounds 20] [--records 2000] [--seed 1] [--json PATH]

``kill``: kill -9 a real gateway during mutations on PostgreSQL; count changes missing from the stream
and duplicates. Each round: clients create, update and delete records through Stripe, HubSpot and
Salesforce sandboxes (every mutation under an Idempotency-Key), the gateway process is killed with
SIGKILL after a random number of upstream writes, a new one starts and recovers the journal, the
cut-off requests are retried under their keys, and the stream is compared with the sandboxes' tables
(tests/ops/chaos.py). Both ``missing_from_stream`` and ``duplicate_creates`` must be 0. Creates that
HubSpot or Salesforce may have applied when the kill came are ``awaiting_change_capture``: their keys
answer 409 ``mutation_outcome_unknown`` until a sync's change capture settles them.

``rotation``: a supervisor with two workers on PostgreSQL and Redis pacing, keys in a file, calls at
50/s over bearer, basic and OAuth2 credentials to an upstream that checks the secret it gets; each
round prepends a new key + reload, forces an OAuth2 refresh, runs ``gateway keys rotate``, restarts
the workers (``gateway restart``) and drops the old key + reload (tests/ops/rotation.py). ``failed``
and ``wrong_secrets`` must be 0; the p99 latency of the calls sent during the rolling restarts is
reported beside the others'.

``webhook``: a webhook receiver down (port closed) for ``--outage`` s while changes keep coming, the
consumer on its default ``max_backoff`` (bench/_outage.py): the backlog must arrive within
``max_backoff`` (plus a few seconds for the POSTs themselves) of the receiver's return, nothing lost,
nothing delivered twice, every record's changes in order.

``syncs``: kill -9 of the replica polling syncs during their backfills. HubSpot, Salesforce and Stripe
sandboxes of ``--records`` records each are read by syncs into a ``postgres`` consumer; each round the
process is killed with SIGKILL part-way through the backfills, after a create, an update and a delete
upstream per sandbox; a last process runs until the consumer's tables equal the upstreams
(tests/syncs/kill.py). ``missing``, ``extra`` and ``stale`` rows must be 0, and ``duplicate_inserts``
at most one page (200) per kill.

Needs PostgreSQL (``GATEWAY_TEST_PG``, default postgresql://postgres@127.0.0.1:5432/test; each
scenario creates a database of its own and drops it at the end) and, for ``rotation``, Redis
(``GATEWAY_TEST_REDIS``). Default: every scenario, 100 kill rounds, 20 rotation rounds, a 120 s
outage, 20 sync kill rounds. ``--quick`` (CI): 3 kill rounds, 1 rotation round, a 6 s outage with
``max_backoff`` 2 s, 3 sync kill rounds over 300 records per sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from bench._outage import outage
from tests.ops.chaos import RECOVERY_LEASE, Chaos
from tests.ops.process import Deployment
from tests.ops.rotation import RATE, WORKERS, Call, drill
from tests.syncs.kill import CAPTURE_LEASE_TTL, PAGE, PROVIDERS, SyncKill

SCENARIOS = ("kill", "rotation", "webhook", "syncs")
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
ADMIN_DSN = os.environ.get("GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@asynccontextmanager
async def _database() -> AsyncIterator[str]:
    """A PostgreSQL database of the bench's own, dropped at the end; its URL."""
    name = f"gw_chaos_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"{ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def _deployment(**sections: dict[str, Any]) -> AsyncIterator[tuple[Deployment, Path, str]]:
    """A migrated deployment on a database of its own, logging warnings only: it, its folder, its store URL."""
    async with _database() as url:
        with tempfile.TemporaryDirectory() as tmp:
            settings = {"store": {"url": url}, "log": {"format": "json", "level": "warning"}, **sections}
            deployment = Deployment.create(Path(tmp), settings)
            await deployment.cli("migrate")
            yield deployment, Path(tmp), url


async def kill(rounds: int, clients: int, seed: int) -> dict[str, Any]:
    async with _deployment(mutations={"recovery_lease": RECOVERY_LEASE}) as (deployment, folder, url):
        chaos = Chaos(deployment, folder, url, clients=clients, seed=seed)
        async with chaos.running():
            tally = await chaos.run(rounds)
    return {"clients": clients, "seed": seed, "recovery_lease": RECOVERY_LEASE, **tally.summary()}


async def rotation(rounds: int) -> dict[str, Any]:
    async with _database() as url:
        with tempfile.TemporaryDirectory() as tmp:
            prefix = f"gw-chaos-{uuid.uuid4().hex[:10]}"
            async with drill(Path(tmp), store_url=url, redis_url=REDIS_URL, redis_prefix=prefix) as rounds_run:
                for _ in range(rounds):
                    await rounds_run.round()
    load = rounds_run.load
    during = rounds_run.during_restarts()
    restarting = set(during)
    failed = Counter(str(call.outcome) for call in load.failed())
    return {
        "rounds": rounds_run.rounds, "workers": WORKERS, "target_rate": RATE, "calls": len(load.calls),
        "calls_per_second": round(len(load.calls) / (load.calls[-1].started - load.calls[0].started), 1),
        "failed": sum(failed.values()), "failed_by_outcome": dict(sorted(failed.items())),
        "wrong_secrets": load.wrong_secrets, "oauth2_refreshes": rounds_run.upstream.state.refreshes,
        "calls_during_restarts": len(during), "p99_ms_during_restarts": _p99_ms(during),
        "p99_ms_otherwise": _p99_ms([c for c in load.calls if c not in restarting]),
        "max_restart_seconds": round(max((end - start for start, end in rounds_run.restarts), default=0.0), 1),
    }  # fmt: skip


async def webhook(seconds: float, max_backoff: float) -> dict[str, Any]:
    async with _database() as url:
        return await outage(url, seconds, max_backoff)


async def syncs(rounds: int, records: int, seed: int) -> dict[str, Any]:
    async with _deployment(stream={"capture_lease_ttl": CAPTURE_LEASE_TTL}) as (deployment, folder, url):
        sync_kill = SyncKill(deployment, folder, url, records=records, seed=seed)
        async with sync_kill.running():
            tally = await sync_kill.run(rounds)
    return {"providers": ",".join(PROVIDERS), "seed": seed, "capture_lease_ttl": CAPTURE_LEASE_TTL, **tally.summary()}


def _p99_ms(calls: list[Call]) -> float:
    if not calls:
        return 0.0
    seconds = sorted(call.seconds for call in calls)
    return round(seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))] * 1000, 1)


def _table(result: dict[str, Any]) -> str:
    width = max(len(k) for k in result)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in result.items())


def _broken(name: str, result: dict[str, Any]) -> bool:
    """Whether ``result`` breaks its scenario's guarantee."""
    if name == "kill":
        return bool(result["missing_from_stream"] or result["duplicate_creates"])
    if name == "rotation":
        return bool(result["failed"] or result["wrong_secrets"])
    if name == "syncs":
        lost = result["missing"] or result["extra"] or result["stale"]
        return bool(lost or result["duplicate_inserts"] > result["rounds"] * PAGE)
    return bool(
        result["lost"] or result["duplicates"] or result["records_out_of_order"] or not result["within_max_backoff"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="3 kill rounds, 1 rotation round, a 6 s outage, 3 sync kill rounds (CI)"
    )
    parser.add_argument("--scenario", choices=SCENARIOS, action="append", help="run only these (repeatable)")
    parser.add_argument("--rounds", type=int, default=100, help="kill -9 rounds")
    parser.add_argument("--rotation-rounds", type=int, default=20)
    parser.add_argument("--outage", type=float, default=120.0, help="seconds the webhook receiver is down")
    parser.add_argument("--max-backoff", type=float, default=60.0, help="the webhook consumer's max_backoff")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--sync-rounds", type=int, default=20, help="kill -9 rounds of the syncs scenario")
    parser.add_argument("--records", type=int, default=2000, help="syncs: records per sandbox")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    runs = {
        "kill": lambda: kill(3 if args.quick else args.rounds, args.clients, args.seed),
        "rotation": lambda: rotation(1 if args.quick else args.rotation_rounds),
        "webhook": lambda: webhook(*((6.0, 2.0) if args.quick else (args.outage, args.max_backoff))),
        "syncs": lambda: syncs(3 if args.quick else args.sync_rounds, 300 if args.quick else args.records, args.seed),
    }
    results: dict[str, dict[str, Any]] = {}
    for name in args.scenario or SCENARIOS:
        results[name] = asyncio.run(runs[name]())
        print(f"== {name}\n{_table(results[name])}\n", flush=True)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    if any(_broken(name, result) for name, result in results.items()):
        sys.exit(1)


if __name__ == "__main__":
    main()
