"""kill -9 of the replica polling syncs, round after round: shared by tests/syncs/test_kill.py and
``bench/chaos.py --scenario syncs``.

Sandboxes of HubSpot, Salesforce and Stripe hold ``records`` records each. Round 0 declares a
credential and a sync per sandbox and a ``postgres`` consumer mirroring them. Each round starts a real
``gateway serve`` on PostgreSQL, lets the syncs read until the backfills reached the round's share of
the records (or are live), changes records upstream meanwhile (a create, an update, a delete per
sandbox), and kills the process with SIGKILL. A last process then runs until the consumer's tables
equal the upstreams: every live upstream record mirrored with its current values, nothing else.

Counted against the sandboxes' own tables (the upstream's truth), after the last process had until
``CONVERGE_DEADLINE`` to catch up: ``missing`` (an upstream record not mirrored), ``extra`` (a mirrored
record the upstream does not have, e.g. deleted), ``stale`` (mirrored with another value), and
``duplicate_inserts`` (an ``insert`` event for a record the stream already held live: the at most one
page per kill that docs/syncs.md allows to be appended twice).
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from sqlalchemy import select

from gateway.config import StoreConfig
from gateway.sandbox import SANDBOX, SandboxState, hubspot, run_sandbox, salesforce, stripe
from gateway.sandbox.common import Knobs
from gateway.store import tables as t
from gateway.store.db import create_engine
from gateway.stream.consumers.postgres import table_name
from tests.mutations.harness import SPECS
from tests.ops.process import Deployment, GatewayProcess, start_gateway
from tests.support import poll
from tests.syncs.harness import FIELD, OBJECT

PROVIDERS = ("hubspot", "salesforce", "stripe")
APPS: dict[str, Callable[..., web.Application]] = {
    "hubspot": hubspot.create_app,
    "salesforce": salesforce.create_app,
    "stripe": stripe.create_app,
}
TABLE = {"hubspot": "contacts", "salesforce": "Contact", "stripe": "customers"}
MIRROR_PREFIX = "mirror_"
CAPTURE_LEASE_TTL = 2.0  # s: how long a killed replica's syncs stay with it (stream.capture_lease_ttl)
CONVERGE_DEADLINE = 300.0
LATENCY = 0.5  # s per sandbox answer, so the backfills span the rounds (a page or two each)
PAGE = 200  # the largest page a capture reads (Salesforce): at most one is appended twice per kill


@dataclass
class SyncTally:
    rounds: int = 0
    kills_during_backfill: int = 0  # the others came while every sync was live (polling)
    records_seeded: int = 0
    upstream_changes: int = 0
    upstream_records: int = 0
    mirrored_rows: int = 0
    missing: int = 0
    extra: int = 0
    stale: int = 0
    duplicate_inserts: int = 0
    converge_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds, "kills_during_backfill": self.kills_during_backfill,
            "records_seeded": self.records_seeded, "upstream_changes": self.upstream_changes,
            "upstream_records": self.upstream_records, "mirrored_rows": self.mirrored_rows,
            "missing": self.missing, "extra": self.extra, "stale": self.stale,
            "duplicate_inserts": self.duplicate_inserts, "converge_seconds": round(self.converge_seconds, 2),
        }  # fmt: skip


class SyncKill:
    def __init__(self, deployment: Deployment, tmp_path: Path, store_url: str, *, records: int, seed: int) -> None:
        self.deployment, self.tmp_path, self.store_url = deployment, tmp_path, store_url
        self.records = records
        self.rng = random.Random(seed)
        self.sandboxes: dict[str, SandboxState] = {}
        self.urls: dict[str, str] = {}
        self.tally = SyncTally()
        self.token = ""
        self.backfilling = False  # at the last look, some sync was still backfilling

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SyncKill]:
        """The sandboxes seeded and served, the HTTP session open."""
        async with AsyncExitStack() as stack:
            for provider in PROVIDERS:
                app = APPS[provider](knobs=Knobs(latency=LATENCY))
                state = app[SANDBOX]
                for i in range(self.records):
                    state.change(OBJECT[provider], "create", None, {FIELD[provider]: f"Seed{i:06d}"})
                self.sandboxes[provider] = state
                self.urls[provider] = await stack.enter_async_context(run_sandbox(app))
            self.tally.records_seeded = self.records * len(PROVIDERS)
            self.session = await stack.enter_async_context(aiohttp.ClientSession())
            # One connection for the comparisons: they are polled every 20 ms while the last process catches up
            self.mirror_db = await asyncpg.connect(self.store_url)
            stack.push_async_callback(self.mirror_db.close)
            yield self

    async def run(self, rounds: int) -> SyncTally:
        self.token = await self.deployment.cli("tokens", "create", "--name", "sync-kill", "--scope", "admin")
        for number in range(rounds):
            async with start_gateway(self.deployment, self.tmp_path, name=f"sync-round{number}") as gateway:
                if number == 0:
                    await self._declare(gateway)
                target = self.tally.records_seeded * (number + 1) // (rounds + 1)
                await poll("backfill progress", lambda: self._read_up_to(gateway, target), deadline=120)
                self._change_upstream(number)
                gateway.proc.kill()
                await gateway.proc.wait()
                self.tally.rounds += 1
                self.tally.kills_during_backfill += self.backfilling
        async with start_gateway(self.deployment, self.tmp_path, name="sync-last") as last:
            started = time.monotonic()
            try:
                await poll("the mirror equals the upstreams", self._in_step, deadline=CONVERGE_DEADLINE)
            except AssertionError:  # what is still off is counted below; how the syncs stand says why
                sys.stderr.write(await self._diagnosis(last))
            self.tally.converge_seconds = time.monotonic() - started
            await self._check()
        return self.tally

    async def _diagnosis(self, gateway: GatewayProcess) -> str:
        """The syncs as the API shows them and the last process's warnings, for a run that did not converge."""
        auth = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession(headers=auth) as session, session.get(f"{gateway.url}/v1/syncs") as resp:
            syncs = (await resp.json())["data"]
        lines = [json.dumps({k: s.get(k) for k in ("id", "state", "last_error", "cursor", "progress")}) for s in syncs]
        lines += [line for line in gateway.output().splitlines() if "warning" in line or "error" in line][-40:]
        return "the mirror did not converge:\n" + "\n".join(lines) + "\n"

    async def _post(self, gateway: GatewayProcess, path: str, body: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.session.post(gateway.url + path, json=body, headers=headers) as resp:
            assert resp.status == 201, await resp.text()

    async def _declare(self, gateway: GatewayProcess) -> None:
        mirror = {"id": "mirror", "kind": "postgres", "dsn": self.store_url, "table_prefix": MIRROR_PREFIX}
        await self._post(gateway, "/v1/consumers", mirror)
        for provider in PROVIDERS:
            spec = SPECS[provider]
            credential = {
                "id": f"kill-{provider}", "provider": provider, "base_url": self.urls[provider], "auth": spec.auth,
                "rate_limit": {"rate": 10000, "per": 1, "burst": 10000},
            }  # fmt: skip
            sync = {"id": f"kill-{provider}", "credential_id": f"kill-{provider}", "collections": [spec.collection],
                    "options": {**spec.options, "poll_interval": 1}}  # fmt: skip
            await self._post(gateway, "/v1/credentials", credential)
            await self._post(gateway, "/v1/syncs", sync)

    async def _read_up_to(self, gateway: GatewayProcess, target: int) -> bool:
        """The backfills read ``target`` records in all, or every sync is live (then it polls)."""
        total, live = 0, True
        for provider in PROVIDERS:
            headers = {"Authorization": f"Bearer {self.token}"}
            async with self.session.get(f"{gateway.url}/v1/syncs/kill-{provider}", headers=headers) as resp:
                view = await resp.json()
            total += sum(view["progress"].values())
            live = live and view["state"] == "live"
        self.backfilling = not live
        return live or total >= target

    def _change_upstream(self, number: int) -> None:
        """Per sandbox a create, an update and a delete, as someone in the provider's own UI would."""
        for provider in PROVIDERS:
            state, field = self.sandboxes[provider], FIELD[provider]
            state.change(OBJECT[provider], "create", None, {field: f"Round{number:03d}"})
            live = sorted(self._upstream(provider))
            state.change(OBJECT[provider], "update", self.rng.choice(live), {field: f"Changed{number:03d}"})
            state.change(OBJECT[provider], "delete", self.rng.choice(live), {})
            self.tally.upstream_changes += 3

    def _upstream(self, provider: str) -> dict[str, Any]:
        """Every live upstream record: id -> the compared field."""
        rows = self.sandboxes[provider].table(TABLE[provider]).items()
        if provider == "hubspot":
            return {i: r["properties"].get(FIELD[provider]) for i, r in rows}
        return {i: r.get(FIELD[provider]) for i, r in rows if not r.get("deleted")}

    async def _mirrored(self, provider: str) -> dict[str, Any]:
        table = table_name(MIRROR_PREFIX, SPECS[provider].collection)
        conn = self.mirror_db
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            return {}
        rows = await conn.fetch(f"SELECT upstream_id, data FROM {table} WHERE NOT deleted")
        return {r["upstream_id"]: json.loads(r["data"]).get(FIELD[provider]) for r in rows}

    async def _in_step(self) -> bool:
        for provider in PROVIDERS:
            if await self._mirrored(provider) != self._upstream(provider):
                return False
        return True

    async def _check(self) -> None:
        """Compare every row, and count inserts of records the stream already held live."""
        for provider in PROVIDERS:
            upstream, mirrored = self._upstream(provider), await self._mirrored(provider)
            self.tally.upstream_records += len(upstream)
            self.tally.mirrored_rows += len(mirrored)
            self.tally.missing += len(upstream.keys() - mirrored.keys())
            self.tally.extra += len(mirrored.keys() - upstream.keys())
            self.tally.stale += sum(1 for i in upstream.keys() & mirrored.keys() if upstream[i] != mirrored[i])
        engine = create_engine(StoreConfig(url=self.store_url))
        try:
            e = t.events.c
            async with engine.connect() as conn:
                rows = (await conn.execute(select(e.sync_id, e.upstream_id, e.action).order_by(e.seq))).all()
        finally:
            await engine.dispose()
        live: Counter[tuple[str, str]] = Counter()
        for row in rows:
            key = (row.sync_id, row.upstream_id)
            if row.action == "insert" and live[key]:
                self.tally.duplicate_inserts += 1
            live[key] = 0 if row.action == "delete" else 1
