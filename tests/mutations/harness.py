"""A gateway wired to one sandbox upstream: credential, sync, a ``mutations`` token, helpers to call it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestServer

from gateway.domain.models import CredentialIn, SyncIn
from gateway.http import appkeys
from gateway.sandbox.common import SANDBOX, Knobs, SandboxState
from tests.conftest import Gateway

SYNC = "my-sync-id"


@dataclass(frozen=True)
class Spec:
    module: str
    collection: str
    auth: dict[str, str]
    options: dict[str, str]
    sample: dict[str, Any]  # a valid record
    change: dict[str, Any]  # a partial update of it
    email_field: str


SPECS = {
    "salesforce": Spec(
        "gateway.sandbox.salesforce",
        "salesforce:contact",
        {"type": "bearer", "token": "00DSANDBOX!sandbox-access-token"},
        {},
        {"FirstName": "Paul", "LastName": "Atreides", "Email": "paul@arrakis.org"},
        {"FirstName": "Usul"},
        "Email",
    ),
    "hubspot": Spec(
        "gateway.sandbox.hubspot",
        "hubspot:contact",
        {"type": "bearer", "token": "pat-na1-sandbox-token"},
        {},
        {"firstname": "Paul", "lastname": "Atreides", "email": "paul@arrakis.org"},
        {"firstname": "Usul"},
        "email",
    ),
    "stripe": Spec(
        "gateway.sandbox.stripe",
        "stripe:customer",
        {"type": "basic", "username": "sk_test_sandbox_key_0123456789", "password": ""},
        {},
        {"name": "Paul Atreides", "email": "paul@arrakis.org"},
        {"name": "Usul"},
        "email",
    ),
    "airtable": Spec(
        "gateway.sandbox.airtable",
        "airtable:Contacts",
        {"type": "bearer", "token": "patSandbox.0123456789abcdef"},
        {"base_id": "appSandboxBase001"},
        {"Name": "Paul Atreides", "Email": "paul@arrakis.org"},
        {"Name": "Usul"},
        "Email",
    ),
}


@dataclass
class Env:
    gw: Gateway
    server: TestServer
    sandbox: SandboxState
    spec: Spec
    token: str

    def body(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"kind": kind, "sync_id": SYNC, "collection_id": self.spec.collection, **fields}

    async def run(
        self, body: Any, *, key: str | None = None, token: str | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        headers = self.gw.auth(token or self.token)
        if key is not None:
            headers["Idempotency-Key"] = key
        async with self.gw.client.post("/v1/mutations/run", json=body, headers=headers) as resp:
            return resp.status, await resp.json(), dict(resp.headers)

    async def create(self, *records: dict[str, Any]) -> list[dict[str, Any]]:
        status, answer, _ = await self.run(self.body("create", records=[{"data": r} for r in records]))
        assert status == 200, answer
        return list(answer["records"])

    def writes(self) -> list[Any]:
        """Requests that changed upstream data (reads, including HubSpot's POST batch/read, excluded)."""
        return [
            r
            for r in self.sandbox.requests
            if r.method in ("POST", "PATCH", "DELETE") and not r.path.endswith("/batch/read")
        ]

    async def stream_actions(self) -> list[tuple[str, str]]:
        from sqlalchemy import select

        from gateway.store import tables as t

        async with self.gw.app[appkeys.ENGINE].connect() as conn:
            rows = (
                await conn.execute(select(t.events.c.action, t.events.c.upstream_id).order_by(t.events.c.seq))
            ).all()
        return [(row[0], row[1]) for row in rows]


async def connect(
    gw: Gateway,
    aiohttp_server: Any,
    provider: str,
    *,
    knobs: Knobs | None = None,
    timeouts: dict[str, float] | None = None,
) -> Env:
    """Start ``provider``'s sandbox and point a credential and sync ``my-sync-id`` at it."""
    spec = SPECS[provider]
    module = importlib.import_module(spec.module)
    app = module.create_app(knobs=knobs) if knobs is not None else module.create_app()
    server = await aiohttp_server(app)
    objects = gw.app[appkeys.OBJECTS]
    credential = {
        "id": f"cred-{provider}",
        "provider": provider,
        "base_url": str(server.make_url("")).rstrip("/"),
        "auth": spec.auth,
        "rate_limit": {"rate": 1000, "per": 1, "burst": 1000},
    }
    if timeouts:
        credential["timeouts"] = timeouts
    await objects.create_credential(CredentialIn.model_validate(credential))
    await objects.create_sync(
        SyncIn(id=SYNC, credential_id=f"cred-{provider}", collections=[spec.collection], options=spec.options)
    )
    token = await gw.token("writer", ["mutations"])
    return Env(gw, server, app[SANDBOX], spec, token)
