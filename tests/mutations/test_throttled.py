"""A mutation the upstream throttles answers 429 asking for the wait the upstream's answer meant.

Airtable's 429 carries no ``Retry-After`` (its docs say: wait 30 seconds) and other APIs may send
``Retry-After`` as an HTTP date: either way the pacer reads the pause from the answer, and the
caller's ``Retry-After`` is that pause, not a default of one second.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

from aiohttp import web

from gateway.domain.models import CredentialIn, SyncIn
from gateway.http import appkeys
from gateway.sandbox import airtable
from gateway.sandbox.common import SANDBOX, Knobs
from tests.conftest import Gateway, GatewayFactory
from tests.mutations.harness import SPECS, SYNC

MAX_WAIT = 5  # below both pauses, so the gateway answers at once instead of waiting to resend


async def _run(gw: Gateway, provider: str, base_url: str) -> tuple[int, Any, dict[str, str]]:
    """One create through a credential of ``provider`` at ``base_url``: status, body and headers."""
    spec = SPECS[provider]
    limit = {"rate": 1000, "per": 1, "burst": 1000, "max_wait": MAX_WAIT}
    credential = {"id": "cred-t", "provider": provider, "base_url": base_url, "auth": spec.auth, "rate_limit": limit}
    objects = gw.app[appkeys.OBJECTS]
    await objects.create_credential(CredentialIn.model_validate(credential))
    await objects.create_sync(
        SyncIn(id=SYNC, credential_id="cred-t", collections=[spec.collection], options=spec.options)
    )
    body = {"kind": "create", "sync_id": SYNC, "collection_id": spec.collection, "records": [{"data": spec.sample}]}
    headers = gw.auth(await gw.token("writer", ["mutations"]))
    async with gw.client.post("/v1/mutations/run", json=body, headers=headers) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def test_airtable_429_asks_for_its_30_second_wait(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """The sandbox's base is in its penalty: 429 without Retry-After, so the caller is told 30 s."""
    app = airtable.create_app(knobs=Knobs(rate_limit=1, rate_window=60, penalty=30))
    server = await aiohttp_server(app)
    gw = await make_gateway()
    sandbox = app[SANDBOX]
    sandbox.admit("appSandboxBase001")  # the base's one call of the window is spent: the next breaches it
    status, answer, headers = await _run(gw, "airtable", str(server.make_url("")).rstrip("/"))
    assert status == 429, answer
    assert int(headers["Retry-After"]) == 30, headers
    assert len(sandbox.requests) == 1, "a refusal longer than max_wait is not resent"


async def test_retry_after_as_an_http_date_is_honoured(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """A 429 whose Retry-After is an HTTP date 20 s ahead: the caller is told about 20 s, not 1."""

    async def refuse(request: web.Request) -> web.Response:
        when = email.utils.formatdate(time.time() + 20, usegmt=True)
        body = {"error": {"message": "Request rate limit exceeded.", "type": "invalid_request_error"}}
        return web.json_response(body, status=429, headers={"Retry-After": when})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    server = await aiohttp_server(app)
    status, answer, headers = await _run(await make_gateway(), "stripe", str(server.make_url("")).rstrip("/"))
    assert status == 429, answer
    assert 15 <= int(headers["Retry-After"]) <= 21, headers


async def test_a_503_with_retry_after_beyond_max_wait_is_rate_limited(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """A 503 asking for 30 s refused the call as a 429 does: the caller is told 429 and 30 s, as a sync is."""

    async def refuse(request: web.Request) -> web.Response:
        body = {"error": {"message": "Service busy, come back later.", "type": "api_error"}}
        return web.json_response(body, status=503, headers={"Retry-After": "30"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    server = await aiohttp_server(app)
    status, answer, headers = await _run(await make_gateway(), "stripe", str(server.make_url("")).rstrip("/"))
    assert status == 429 and answer["code"] == "rate_limited", answer
    assert 29 <= int(headers["Retry-After"]) <= 30, headers
