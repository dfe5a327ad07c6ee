"""``gateway serve --demo``: the gateway with four sandbox upstreams, seeded, in one command.

``demo_config`` swaps in what must not outlive the demo (a fresh encryption key, a SQLite store in a
temporary directory) and says so on stderr. ``install_demo`` adds a cleanup context that, before the
first request, starts the Salesforce, HubSpot, Stripe and Airtable sandboxes on free loopback ports,
seeds them, creates one credential and one sync per provider, the ``demo-consumer`` pull consumer and
an admin token, then prints a banner of curl lines that work as pasted. The token appears only in
that banner: it is registered with the log redaction before anything else happens.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter

from gateway.config import Config, StoreConfig
from gateway.domain.models import ConsumerIn, CredentialIn, SyncIn, TokenIn
from gateway.http import appkeys
from gateway.observability.logs import register_secret
from gateway.sandbox import airtable, hubspot, salesforce, stripe
from gateway.sandbox.common import SANDBOX, SandboxState
from gateway.sandbox.runner import run_sandbox
from gateway.store.objects import Objects
from gateway.vault.crypto import Keyring, generate_key

CONSUMER_ID = "demo-consumer"
DEMO_POLL_INTERVAL = "2"  # seconds: a change made in a sandbox reaches the consumer quickly
BACKFILL_DEADLINE = 20.0
TOKEN_NAME = "demo-admin"


@dataclass(frozen=True)
class DemoUpstream:
    """One sandbox of the demo: how to build and seed it, and the objects that point the gateway at it."""

    provider: str
    create: Callable[[], web.Application]
    seed: Callable[[Any], None]
    auth: Callable[[str], dict[str, Any]]
    collections: list[str]
    options: dict[str, str] = field(default_factory=dict)


UPSTREAMS = (
    DemoUpstream(
        "salesforce",
        salesforce.create_app,
        salesforce.seed,
        lambda url: {
            "type": "oauth2",
            "access_token": salesforce.DEFAULT_TOKEN,
            "refresh_token": salesforce.DEFAULT_REFRESH_TOKEN,
            "token_url": f"{url}/services/oauth2/token",
            "client_id": salesforce.DEFAULT_CLIENT_ID,
            "client_secret": salesforce.DEFAULT_CLIENT_SECRET,
        },
        ["salesforce:contact"],
    ),
    DemoUpstream(
        "hubspot",
        hubspot.create_app,
        hubspot.seed,
        lambda _url: {"type": "bearer", "token": hubspot.DEFAULT_TOKEN},
        ["hubspot:contact", "hubspot:company"],
    ),
    DemoUpstream(
        "stripe",
        stripe.create_app,
        stripe.seed,
        lambda _url: {"type": "basic", "username": stripe.DEFAULT_KEY, "password": ""},
        ["stripe:customer"],
    ),
    DemoUpstream(
        "airtable",
        airtable.create_app,
        airtable.seed,
        lambda _url: {"type": "bearer", "token": airtable.DEFAULT_TOKEN},
        ["airtable:Contacts"],
        {"base_id": airtable.DEFAULT_BASE},
    ),
)


@dataclass
class Demo:
    """What the running demo made: the sandboxes by provider, their URLs and the banner printed."""

    sandboxes: dict[str, SandboxState] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    banner: str = ""


DEMO = web.AppKey("demo", Demo)


def demo_config(config: Config) -> tuple[Config, Keyring]:
    """The config with an ephemeral SQLite store, and a fresh key: nothing of the demo persists."""
    directory = tempfile.mkdtemp(prefix="gateway-demo-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    store = StoreConfig(url=f"sqlite:///{Path(directory) / 'gateway.db'}", auto_migrate=True)
    keyring = Keyring.parse(generate_key("demo"))
    print(
        f"gateway demo: using an ephemeral encryption key and a throwaway SQLite store in {directory}; "
        "nothing is kept after exit",
        file=sys.stderr,
    )
    return config.model_copy(update={"store": store}), keyring


def install_demo(app: web.Application) -> None:
    """Start, seed and register the sandboxes before the first request (an aiohttp cleanup context)."""
    app[DEMO] = Demo()
    app.cleanup_ctx.append(_demo_context)


async def _demo_context(app: web.Application) -> AsyncIterator[None]:
    demo, objects = app[DEMO], app[appkeys.OBJECTS]
    async with AsyncExitStack() as stack:
        for upstream in UPSTREAMS:
            sandbox_app = upstream.create()
            url = await stack.enter_async_context(run_sandbox(sandbox_app))
            upstream.seed(sandbox_app[SANDBOX])
            demo.sandboxes[upstream.provider], demo.urls[upstream.provider] = sandbox_app[SANDBOX], url
            credential_id, sync_id = f"credential-{upstream.provider}", f"sync-{upstream.provider}"
            await objects.upsert_credential(
                CredentialIn.model_validate(
                    {"id": credential_id, "provider": upstream.provider, "base_url": url, "auth": upstream.auth(url)}
                )
            )
            options = {**upstream.options, "poll_interval": DEMO_POLL_INTERVAL}
            await objects.upsert_sync(
                SyncIn(id=sync_id, credential_id=credential_id, collections=upstream.collections, options=options)
            )
            app[appkeys.SYNC_RUNNERS].poke(sync_id)
        await _backfilled(objects, [f"sync-{u.provider}" for u in UPSTREAMS])
        # Created after the backfill, so it receives the changes made from now on, not the seed rows.
        consumer: ConsumerIn = TypeAdapter(ConsumerIn).validate_python({"id": CONSUMER_ID, "kind": "pull"})
        await objects.upsert_consumer(consumer)
        token = await app[appkeys.TOKENS].create(TokenIn(name=TOKEN_NAME, scopes=["admin"]))
        register_secret(token)  # security: the banner is the only place the token may appear
        demo.banner = banner(_public_url(app[appkeys.CONFIG]), token, demo.urls)
        print(demo.banner, flush=True)
        yield


async def _backfilled(objects: Objects, sync_ids: list[str]) -> None:
    """Wait (a few seconds at most) for the syncs to finish reading the seed rows."""
    deadline = time.monotonic() + BACKFILL_DEADLINE
    while time.monotonic() < deadline:
        views = [await objects.sync_view(sync_id) for sync_id in sync_ids]
        if all(v.state != "backfilling" for v in views):
            return
        await asyncio.sleep(0.1)  # poll interval while the syncs read the sandboxes


def _public_url(config: Config) -> str:
    if config.server.public_url:
        return config.server.public_url.rstrip("/")
    host = "127.0.0.1" if config.server.host in ("0.0.0.0", "::", "") else config.server.host
    return f"http://{host}:{config.server.port}"


def curl(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> str:
    """One curl command line, quoted so it works pasted into a POSIX shell."""
    parts = ["curl", "-s", "-X", method, url, "-H", f"Authorization: Bearer {token}"]
    if body is not None:
        parts += ["-H", "Content-Type: application/json", "-d", json.dumps(body, separators=(",", ":"))]
    return shlex.join(parts)


def banner(base: str, token: str, urls: dict[str, str]) -> str:
    """The text printed at start: where things run, the token once, and four commands to try."""
    create = {
        "kind": "create",
        "sync_id": "sync-salesforce",
        "collection_id": "salesforce:contact",
        "records": [{"data": {"FirstName": "Katherine", "LastName": "Johnson", "Email": "katherine@example.com"}}],
    }
    sandboxes = ", ".join(f"{name} {url}" for name, url in urls.items())
    outside = {"action": "create", "data": {"FirstName": "Dorothy", "LastName": "Vaughan"}}
    change = shlex.join(
        ["curl", "-s", "-X", "POST", f"{urls['salesforce']}/_sandbox/records/contact", "-H",
         "Content-Type: application/json", "-d", json.dumps(outside, separators=(",", ":"))]
    )  # fmt: skip
    return "\n".join(
        [
            "",
            f"gateway demo running on {base}",
            f"sandbox upstreams: {sandboxes}",
            f"admin token (shown only here): {token}",
            f"web console: {base}/console (sign in with the admin token)",
            "",
            "# create a Salesforce contact through the Mutation API",
            curl("POST", f"{base}/v1/mutations/run", token, create),
            "# list HubSpot contacts through the proxy",
            curl("GET", f"{base}/v1/proxy/sync/sync-hubspot/crm/v3/objects/contacts", token),
            "# change a Salesforce contact in the sandbox itself, as if in Salesforce's own UI (the sync polls it)",
            change,
            f"# receive the changes from the pull consumer {CONSUMER_ID}",
            curl("POST", f"{base}/v1/consumers/{CONSUMER_ID}/receive", token, {"batch_size": 10, "wait_for": 5000}),
            "",
        ]
    )
