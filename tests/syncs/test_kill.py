"""kill -9 of the replica polling a sync during its backfill loses no change: the PostgreSQL
consumer's table ends identical to the upstream, row by row."""

from __future__ import annotations

import functools
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from gateway.sandbox import SANDBOX, hubspot, run_sandbox
from gateway.sandbox.common import Knobs
from tests.ops.process import Deployment, start_gateway
from tests.syncs.harness import until

ROUNDS = 3
RECORDS = 1000


async def _call(session: aiohttp.ClientSession, url: str, token: str, body: dict[str, Any], path: str) -> Any:
    async with session.post(url + path, json=body, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 201, await resp.text()
        return await resp.json()


async def _progress(session: aiohttp.ClientSession, url: str, token: str) -> int:
    async with session.get(url + "/v1/syncs/s-hubspot", headers={"Authorization": f"Bearer {token}"}) as resp:
        return int((await resp.json())["progress"].get("hubspot:contact", 0))


async def test_kill_9_during_backfill_loses_nothing(tmp_path: Path, pg_url: str) -> None:
    app = hubspot.create_app(knobs=Knobs(latency=0.02))
    state = app[SANDBOX]
    for i in range(RECORDS):
        state.change("contact", "create", None, {"lastname": f"Name{i:05d}"})
    sections = {"store": {"url": pg_url}, "log": {"format": "json"}, "stream": {"capture_lease_ttl": 2}}
    deployment = Deployment.create(tmp_path, sections)
    await deployment.cli("migrate")
    token = await deployment.cli("tokens", "create", "--name", "admin", "--scope", "admin")
    async with run_sandbox(app) as upstream, aiohttp.ClientSession() as session:
        for round_ in range(ROUNDS):
            async with start_gateway(deployment, tmp_path, name=f"r{round_}") as gw:
                if round_ == 0:
                    credential = {"id": "c-hubspot", "provider": "hubspot", "base_url": upstream,
                                  "auth": {"type": "bearer", "token": hubspot.DEFAULT_TOKEN},
                                  "rate_limit": {"rate": 10000, "per": 1, "burst": 10000}}  # fmt: skip
                    await _call(session, gw.url, token, credential, "/v1/credentials")
                    mirror = {"id": "mirror", "kind": "postgres", "dsn": pg_url, "table_prefix": "mirror_"}
                    await _call(session, gw.url, token, mirror, "/v1/consumers")
                    sync = {"id": "s-hubspot", "credential_id": "c-hubspot", "collections": ["hubspot:contact"],
                            "options": {"poll_interval": 1}}  # fmt: skip
                    await _call(session, gw.url, token, sync, "/v1/syncs")
                target = RECORDS * (round_ + 1) // (ROUNDS + 1)
                await until("backfill progress", functools.partial(_over, session, gw.url, token, target), 120)
                ids = sorted(state.table("contacts"))
                state.change("contact", "update", ids[round_], {"lastname": f"Changed{round_}"})
                state.change("contact", "delete", ids[-1 - round_], {})
                gw.proc.send_signal(signal.SIGKILL)
                await gw.proc.wait()
        async with start_gateway(deployment, tmp_path, name="last"):
            await until("the mirror equals the upstream", lambda: _mirrored(pg_url, state), 180)


async def _over(session: aiohttp.ClientSession, url: str, token: str, target: int) -> bool:
    return await _progress(session, url, token) >= target


async def _mirrored(dsn: str, state: Any) -> bool:
    upstream = {i: o["properties"] for i, o in state.table("contacts").items()}
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass('mirror_hubspot_contact') IS NOT NULL")
        rows = (
            await conn.fetch("SELECT upstream_id, data FROM mirror_hubspot_contact WHERE NOT deleted") if exists else []
        )
    finally:
        await conn.close()
    mirrored = {r["upstream_id"]: json.loads(r["data"]) for r in rows}
    if set(mirrored) != set(upstream):
        return False
    fields = ("lastname", "hs_lastmodifieddate")
    return all(mirrored[i].get(f) == upstream[i].get(f) for i in upstream for f in fields)
