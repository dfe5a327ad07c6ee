"""kill -9 during mutations, then count what the stream lost: shared by tests/ops and bench/chaos.py.

Each round starts a real ``gateway serve`` on PostgreSQL (the previous round's victim's journal is
recovered by it), has clients retry what the kill cut off, checks the stream against the sandboxes,
then runs clients that create, update and delete records of their own through Stripe, HubSpot and
Salesforce sandboxes (each mutation under an Idempotency-Key), and kills the process with SIGKILL
after a random number of upstream writes. After the last round one more process recovers and checks.

Checked against the sandboxes' own tables (the upstream's truth):
- missing: a live upstream record not in the stream (or with a stale field), or a record the upstream
  deleted that the stream still holds. Creates awaiting change capture (journal ``unknown``, answered
  409 ``mutation_outcome_unknown``) are counted apart, as ``awaiting_capture``.
- duplicates: two upstream records carrying one email (a create applied twice).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import func, select

from gateway.config import StoreConfig
from gateway.sandbox import SANDBOX, SandboxState, hubspot, run_sandbox, salesforce, stripe
from gateway.store import tables as t
from gateway.store.db import create_engine
from tests.mutations.harness import SPECS
from tests.ops.process import Deployment, GatewayProcess, start_gateway
from tests.support import poll

PROVIDERS = ("stripe", "hubspot", "salesforce")
# provider -> (sandbox table, identity field set once at create, field the updates change)
FIELDS = {
    "stripe": ("customers", "email", "name"),
    "hubspot": ("contacts", "email", "firstname"),
    "salesforce": ("Contact", "Email", "FirstName"),
}
APPS: dict[str, Callable[..., web.Application]] = {
    "stripe": stripe.create_app,
    "hubspot": hubspot.create_app,
    "salesforce": salesforce.create_app,
}
RECOVERY_LEASE = 2.0  # s: how long a dead replica's lease outlives it (config mutations.recovery_lease)


@dataclass
class Tally:
    rounds: int = 0
    mutations: int = 0
    answered: int = 0
    cut_off: int = 0  # requests the kill left without an answer
    retried: Counter[str] = field(default_factory=Counter)  # the retry's status and code
    upstream_records: int = 0
    missing: int = 0
    awaiting_capture: int = 0
    duplicates: int = 0
    recovered: int = 0  # journal rows a killed replica left running, settled by the next one
    recovery_seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds, "mutations": self.mutations, "answered": self.answered,
            "cut_off": self.cut_off, "retried": dict(sorted(self.retried.items())),
            "journal_rows_recovered": self.recovered, "upstream_records": self.upstream_records,
            "missing_from_stream": self.missing, "awaiting_change_capture": self.awaiting_capture,
            "duplicate_creates": self.duplicates,
            "max_recovery_seconds": round(max(self.recovery_seconds, default=0.0), 2),
        }  # fmt: skip


@dataclass
class Sent:
    key: str
    body: dict[str, Any]
    answered: bool = False


@dataclass
class Client:
    """One client: creates records, then updates and deletes only its own (no two clients race)."""

    name: str
    rng: random.Random
    owned: dict[str, list[str]] = field(default_factory=lambda: {p: [] for p in PROVIDERS})
    count: int = 0

    def next_body(self) -> tuple[str, dict[str, Any]]:
        self.count += 1
        key = f"{self.name}-{self.count}"
        provider = self.rng.choice(PROVIDERS)
        own, (_, ident, changed) = self.owned[provider], FIELDS[provider]
        base = {"sync_id": f"chaos-{provider}", "collection_id": SPECS[provider].collection}
        roll = self.rng.random()
        if own and roll < 0.3:
            ids = self.rng.sample(own, min(len(own), self.rng.randint(1, 2)))
            return key, {**base, "kind": "update", "records": [{"upstream_id": i, "data": {changed: key}} for i in ids]}
        if own and roll < 0.4:
            gone = own.pop(self.rng.randrange(len(own)))
            return key, {**base, "kind": "delete", "upstream_ids": [gone]}
        records = []
        for i in range(self.rng.randint(1, 3)):
            data = {**SPECS[provider].sample, ident: f"{key}-{i}@chaos.example", changed: key}
            records.append({"data": data})
        return key, {**base, "kind": "create", "records": records}

    def learn(self, body: dict[str, Any], answer: Any) -> None:
        if body["kind"] == "create" and isinstance(answer, dict):
            provider = body["sync_id"].removeprefix("chaos-")
            self.owned[provider].extend(r["upstream_id"] for r in answer.get("records") or [])


class Chaos:
    def __init__(self, deployment: Deployment, tmp_path: Path, store_url: str, *, clients: int, seed: int) -> None:
        self.deployment, self.tmp_path, self.store_url = deployment, tmp_path, store_url
        self.rng = random.Random(seed)
        self.clients = [Client(f"c{i}", random.Random(seed * 100 + i)) for i in range(clients)]
        self.sandboxes: dict[str, SandboxState] = {}
        self.urls: dict[str, str] = {}
        self.cut_off: list[Sent] = []
        self.tally = Tally()
        self.engine = create_engine(StoreConfig(url=store_url))
        self.token = ""

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Chaos]:
        """The three sandboxes served, the session open, the store's engine closed at the end."""
        async with AsyncExitStack() as stack:
            for provider in PROVIDERS:
                app = APPS[provider]()
                self.urls[provider] = await stack.enter_async_context(run_sandbox(app))
                self.sandboxes[provider] = app[SANDBOX]
            self.session = await stack.enter_async_context(aiohttp.ClientSession())
            stack.push_async_callback(self.engine.dispose)
            yield self

    async def run(self, rounds: int) -> Tally:
        admin = await self.deployment.cli("tokens", "create", "--name", "chaos-admin", "--scope", "admin")
        self.token = await self.deployment.cli("tokens", "create", "--name", "chaos", "--scope", "mutations")
        for number in range(rounds + 1):
            async with start_gateway(self.deployment, self.tmp_path, name=f"round{number}") as gateway:
                if number == 0:
                    await self._declare(gateway, admin)
                else:
                    await self._settle(gateway)
                if number < rounds:
                    await self._load_and_kill(gateway)
                    self.tally.rounds += 1
        return self.tally

    async def _declare(self, gateway: GatewayProcess, admin: str) -> None:
        for provider in PROVIDERS:
            spec = SPECS[provider]
            credential = {
                "id": f"chaos-{provider}", "provider": provider, "base_url": self.urls[provider], "auth": spec.auth,
                "rate_limit": {"rate": 1000, "per": 1, "burst": 1000},
            }  # fmt: skip
            sync = {"id": f"chaos-{provider}", "credential_id": f"chaos-{provider}", "collections": [spec.collection]}
            for kind, body in (("credentials", credential), ("syncs", sync)):
                async with self.session.post(
                    f"{gateway.url}/v1/{kind}", json=body, headers={"Authorization": f"Bearer {admin}"}
                ) as resp:
                    assert resp.status == 201, await resp.text()

    async def _call(self, gateway: GatewayProcess, sent: Sent) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": sent.key}
        async with self.session.post(f"{gateway.url}/v1/mutations/run", json=sent.body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def _load_and_kill(self, gateway: GatewayProcess) -> None:
        """Clients run until the upstreams saw a random number of writes more, then SIGKILL."""
        writes_before = self._upstream_writes()
        target = writes_before + self.rng.randint(2, 14)
        tasks = [asyncio.create_task(self._client_loop(gateway, c)) for c in self.clients]
        try:
            await poll("upstream writes before the kill", lambda: self._upstream_writes() >= target, deadline=60)
        finally:
            gateway.proc.kill()
            await gateway.proc.wait()
            await asyncio.gather(*tasks)

    async def _client_loop(self, gateway: GatewayProcess, client: Client) -> None:
        while True:
            key, body = client.next_body()
            sent = Sent(key, body)
            self.tally.mutations += 1
            try:
                _status, answer = await self._call(gateway, sent)
            except (aiohttp.ClientError, TimeoutError):
                self.cut_off.append(sent)
                self.tally.cut_off += 1
                return
            self.tally.answered += 1
            client.learn(body, answer)

    async def _settle(self, gateway: GatewayProcess) -> None:
        """Wait for recovery, retry what the kill cut off under the same keys, then check the stream."""
        started = time.monotonic()
        self.tally.recovered += await self._journal_rows("running")  # what the victim left in flight
        await poll("recovery settled every running journal row", self._recovered, deadline=60)
        self.tally.recovery_seconds.append(time.monotonic() - started)
        for sent in self.cut_off:
            status, answer = await self._call(gateway, sent)
            code = answer.get("code", "") if isinstance(answer, dict) else ""
            self.tally.retried[f"{status} {code}".strip()] += 1
            if status == 200:
                for client in self.clients:
                    if sent.key.startswith(client.name + "-"):
                        client.learn(sent.body, answer)
        self.cut_off.clear()
        await self._check()

    async def _journal_rows(self, state: str | None = None) -> int:
        query = select(func.count()).select_from(t.mutation_journal)
        if state is not None:
            query = query.where(t.mutation_journal.c.state == state)
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def _recovered(self) -> bool:
        return await self._journal_rows("running") == 0

    def _upstream_writes(self) -> int:
        return sum(
            1
            for sandbox in self.sandboxes.values()
            for r in sandbox.requests
            if r.method in ("POST", "PATCH", "DELETE") and "/batch/read" not in r.path and "/query" not in r.path
        )

    async def _check(self) -> None:
        """Count missing changes and duplicate creates, now (the counts are totals over all rounds)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.records))).all()
            unknown = (
                await conn.execute(select(t.mutation_journal.c["items"]).where(t.mutation_journal.c.state == "unknown"))
            ).all()
        stream = {(row.sync_id, row.upstream_id): row for row in rows}
        pending = {str(data.get(FIELDS[p][1])) for (items,) in unknown for _, data in items for p in PROVIDERS}
        missing = awaiting = duplicates = upstream = 0
        for provider in PROVIDERS:
            table, ident, changed = FIELDS[provider]
            rows_up = self.sandboxes[provider].table(table).items()
            live = {i: f for i, r in rows_up if (f := _fields(provider, r)) is not None}
            upstream += len(live)
            emails = Counter(f.get(ident) for f in live.values())
            duplicates += sum(n - 1 for n in emails.values() if n > 1)
            for upstream_id, fields in live.items():
                row = stream.get((f"chaos-{provider}", upstream_id))
                if row is None or row.deleted:
                    awaiting += fields.get(ident) in pending
                    missing += fields.get(ident) not in pending
                elif row.data.get(changed) != fields.get(changed):
                    missing += 1
            held = [i for (sync, i), row in stream.items() if sync == f"chaos-{provider}" and not row.deleted]
            missing += sum(1 for i in held if i not in live)
        self.tally.missing, self.tally.awaiting_capture = missing, awaiting
        self.tally.duplicates, self.tally.upstream_records = duplicates, upstream


def _fields(provider: str, record: dict[str, Any]) -> dict[str, Any] | None:
    """A live upstream record's fields; None for Stripe's deleted stubs."""
    if provider == "stripe":
        return None if record.get("deleted") else record
    if provider == "hubspot":
        return dict(record.get("properties") or {})
    return record
