"""kill -9 a real gateway during mutations on PostgreSQL; count changes missing from the stream and duplicates.

    python -m bench.chaos [--quick] [--rounds 100] [--clients 4] [--seed 1] [--json PATH]

Each round: clients create, update and delete records through Stripe, HubSpot and Salesforce sandboxes
(every mutation under an Idempotency-Key), the gateway process is killed with SIGKILL after a random
number of upstream writes, a new one starts and recovers the journal, the cut-off requests are retried
under their keys, and the stream is compared with the sandboxes' tables (tests/ops/chaos.py). Both
``missing_from_stream`` and ``duplicate_creates`` must be 0 (the exit status says so). Creates that
HubSpot or Salesforce may have applied when the kill came are ``awaiting_change_capture``: their keys
answer 409 ``mutation_outcome_unknown`` until a sync's change capture settles them.

Needs PostgreSQL (``GATEWAY_TEST_PG``, default postgresql://postgres@127.0.0.1:5432/test): the bench
creates a database of its own and drops it at the end. ``--quick`` runs 3 rounds (CI); the default 100.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from tests.ops.chaos import RECOVERY_LEASE, Chaos
from tests.ops.process import Deployment

ADMIN_DSN = os.environ.get("GATEWAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


async def _database(name: str, *, drop: bool = False) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        if drop:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def run(rounds: int, clients: int, seed: int) -> dict[str, Any]:
    name = f"gw_chaos_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = f"{ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    await _database(name)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sections = {
                "store": {"url": url},
                "log": {"format": "json", "level": "warning"},
                "mutations": {"recovery_lease": RECOVERY_LEASE},
            }
            deployment = Deployment.create(Path(tmp), sections)
            await deployment.cli("migrate")
            chaos = Chaos(deployment, Path(tmp), url, clients=clients, seed=seed)
            async with chaos.running():
                tally = await chaos.run(rounds)
    finally:
        await _database(name, drop=True)
    return {"clients": clients, "seed": seed, "recovery_lease": RECOVERY_LEASE, **tally.summary()}


def _table(result: dict[str, Any]) -> str:
    width = max(len(k) for k in result)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in result.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds (CI)")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    result = asyncio.run(run(3 if args.quick else args.rounds, args.clients, args.seed))
    print(_table(result))
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    if result["missing_from_stream"] or result["duplicate_creates"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
