"""A gateway whose sync reads one sandbox upstream, and views to compare the two."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from gateway.http import appkeys
from gateway.sandbox.common import SANDBOX, Knobs, SandboxState
from gateway.store import tables as t
from tests.conftest import Gateway, GatewayFactory
from tests.mutations.harness import SPECS

SYNC = "sync-under-test"
OBJECT = {"salesforce": "contact", "hubspot": "contact", "stripe": "customer", "airtable": "Contacts"}
FIELD = {"salesforce": "LastName", "hubspot": "lastname", "stripe": "name", "airtable": "Name"}
PROVIDERS = tuple(OBJECT)


async def until(what: str, check: Callable[[], Awaitable[bool]], deadline: float = 60) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await check():
            return
        await asyncio.sleep(0.05)  # poll interval, not a wait for the condition
    raise AssertionError(f"{what} within {deadline}s")


@dataclass
class SyncEnv:
    gw: Gateway
    server: TestServer
    sandbox: SandboxState
    provider: str

    @property
    def collection(self) -> str:
        return SPECS[self.provider].collection

    def seed(self, n: int, start: int = 0) -> list[str]:
        """``n`` records created upstream directly (not through the gateway); their ids."""
        made = [self.change("create", data=self.sample(i)) for i in range(start, start + n)]
        return [str(r["Id"] if self.provider == "salesforce" else r["id"]) for r in made if r]

    def sample(self, i: int) -> dict[str, Any]:
        value = f"Name{i:05d}"
        return {"salesforce": {"LastName": value}, "hubspot": {"lastname": value}, "stripe": {"name": value},
                "airtable": {"Name": value}}[self.provider]  # fmt: skip

    def change(self, action: str, upstream_id: str | None = None, data: dict[str, Any] | None = None) -> Any:
        return self.sandbox.change(OBJECT[self.provider], action, upstream_id, data or {})

    def upstream(self) -> dict[str, str | None]:
        """Every live upstream record: id -> the compared field."""
        s, field = self.sandbox, FIELD[self.provider]
        if self.provider == "salesforce":
            return {i: r.get(field) for i, r in s.table("Contact").items()}
        if self.provider == "hubspot":
            return {i: r["properties"].get(field) for i, r in s.table("contacts").items()}
        if self.provider == "stripe":
            return {i: r.get(field) for i, r in s.table("customers").items() if not r.get("deleted")}
        return {i: r["fields"].get(field) for i, r in s.objects.get("appSandboxBase001/Contacts", {}).items()}

    async def stored(self) -> dict[str, str]:
        """Every live record in the gateway's records table: id -> the compared field."""
        r = t.records.c
        async with self.gw.app[appkeys.ENGINE].connect() as conn:
            rows = (
                await conn.execute(select(r.upstream_id, r.data).where(r.sync_id == SYNC, r.deleted.is_(False)))
            ).all()
        return {row.upstream_id: row.data.get(FIELD[self.provider]) for row in rows}

    async def in_step(self) -> bool:
        return await self.stored() == self.upstream()

    async def view(self) -> dict[str, Any]:
        async with self.gw.client.get(f"/v1/syncs/{SYNC}", headers=self.gw.auth()) as resp:
            assert resp.status == 200
            return dict(await resp.json())

    async def post(self, action: str) -> dict[str, Any]:
        async with self.gw.client.post(f"/v1/syncs/{SYNC}/{action}", headers=self.gw.auth()) as resp:
            assert resp.status == 200, await resp.text()
            return dict(await resp.json())

    async def events(self) -> list[tuple[str, str, Any]]:
        e = t.events.c
        async with self.gw.app[appkeys.ENGINE].connect() as conn:
            rows = (await conn.execute(select(e.action, e.upstream_id, e.record).order_by(e.seq))).all()
        return [(row.action, row.upstream_id, row.record) for row in rows]

    async def progress_is(self, n: int) -> bool:
        """Whether the backfill has counted ``n`` records of the collection."""
        return bool((await self.view())["progress"].get(self.collection) == n)

    async def poller_stopped(self) -> bool:
        """Whether this replica runs no poller for the sync (e.g. it is paused)."""
        current = self.gw.app[appkeys.SYNC_RUNNERS].running.get(SYNC)
        return current is None or current[1].done()

    async def wait_polls(self, rounds: int = 2) -> None:
        """Wait until ``rounds`` complete rounds (each reading every change) began after this call."""
        for _ in range(rounds):
            asked = time.monotonic()

            async def round_since(asked: float = asked) -> bool:
                view = await self.view()
                lag = view["lag_seconds"]
                return view["state"] == "live" and lag is not None and time.monotonic() - lag > asked

            await until("another complete poll", round_since, 30)


async def connect(
    make_gateway: GatewayFactory,
    aiohttp_server: Any,
    provider: str,
    *,
    seed: int = 0,
    knobs: Knobs | None = None,
    rate_limit: dict[str, float] | None = None,
    options: dict[str, Any] | None = None,
    create: bool = True,
    before: Sequence[Callable[..., Awaitable[web.StreamResponse]]] = (),
) -> SyncEnv:
    """A gateway reading ``provider``'s sandbox (unlimited unless ``knobs`` say) through sync ``SYNC``.

    ``before``: middlewares that see each request before the sandbox does (and may answer it instead)."""
    gw = await make_gateway(stream={"capture": True, "capture_lease_ttl": 3})
    spec = SPECS[provider]
    app = importlib.import_module(spec.module).create_app(knobs=knobs or Knobs())
    app.middlewares[:0] = before
    server = await aiohttp_server(app)
    env = SyncEnv(gw, server, app[SANDBOX], provider)
    env.seed(seed)
    credential = {
        "id": f"cred-{provider}",
        "provider": provider,
        "base_url": str(server.make_url("")).rstrip("/"),
        "auth": spec.auth,
        "rate_limit": rate_limit or {"rate": 100000, "per": 1, "burst": 100000},
    }
    async with gw.client.post("/v1/credentials", json=credential, headers=gw.auth()) as resp:
        assert resp.status == 201, await resp.text()
    if create:
        body = {"id": SYNC, "credential_id": f"cred-{provider}", "collections": [spec.collection],
                "options": {**spec.options, "poll_interval": 1, "max_share": 1, **(options or {})}}  # fmt: skip
        async with gw.client.post("/v1/syncs", json=body, headers=gw.auth()) as resp:
            assert resp.status == 201, await resp.text()
        gw.app[appkeys.SYNC_RUNNERS].poke(SYNC)
    return env
