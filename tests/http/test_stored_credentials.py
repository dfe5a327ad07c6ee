"""A credential row an older version wrote, holding a value this one refuses (a header name, a host, a
token), answers 409 naming the field on each call through it; the other credentials, the listing and a
PATCH that repairs it work (before: a 500 on every call through it, and on every console overview)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import update

from gateway.app import create_app
from gateway.domain.models import TokenIn
from gateway.http import appkeys
from gateway.store import tables as t
from gateway.vault.crypto import Keyring
from tests.conftest import Gateway, GatewayFactory, ServedLikeProduction, make_config
from tests.upstream.helpers import add_credential, start_upstream

SECRET = "upstream-secret-token"


@pytest.mark.parametrize(
    ("field", "column", "stored"),
    [
        ("base_url", "base_url", "http://a..b"),  # an empty label: a 500 inside the resolver
        ("auth", "auth_secret", {"type": "header", "name": "Content-Length", "value": SECRET}),
        ("auth", "auth_secret", {"type": "bearer", "token": "line\r\nX-Evil: 1"}),  # a refresh stored it
    ],
)
async def test_a_stored_value_refused_today_fails_its_own_calls_only(
    make_gateway: GatewayFactory, aiohttp_server: Any, field: str, column: str, stored: Any
) -> None:
    gw = await make_gateway()
    upstream = await start_upstream(aiohttp_server)
    for cid in ("old", "other"):
        await add_credential(gw, upstream.url + "/echo", cid=cid)
    value = gw.app[appkeys.KEYRING].seal(json.dumps(stored)) if column == "auth_secret" else stored
    async with gw.app[appkeys.ENGINE].begin() as conn:  # as an older version wrote it, before any call read it
        await conn.execute(update(t.credentials).where(t.credentials.c.id == "old").values({column: value}))

    async with gw.client.get("/v1/proxy/credential/old/x", headers=gw.auth()) as resp:
        error = await resp.json()
    assert resp.status == 409 and error["code"] == "conflict" and error["field"] == field, error
    assert "PATCH" in error["error"] and SECRET not in json.dumps(error)
    async with gw.client.get("/v1/proxy/credential/other/x", headers=gw.auth()) as resp:
        assert resp.status == 200, await resp.text()
    async with gw.client.get("/v1/credentials", headers=gw.auth()) as resp:
        assert resp.status == 200 and SECRET not in await resp.text()
    readable = await gw.app[appkeys.OBJECTS].all_credentials()  # the console's overview reads these
    assert [credential.id for credential in readable] == ["other"]

    repair = {
        "base_url": {"base_url": upstream.url + "/echo"},
        "auth": {"auth": {"type": "bearer", "token": SECRET}},
    }[field]
    async with gw.client.patch("/v1/credentials/old", json=repair, headers=gw.auth()) as resp:
        assert resp.status == 200, await resp.text()
    async with gw.client.get("/v1/proxy/credential/old/x", headers=gw.auth()) as resp:
        assert resp.status == 200, await resp.text()


async def test_a_declared_credential_the_store_holds_unreadable_is_rewritten_from_the_config(
    make_gateway: GatewayFactory, aiohttp_server: Any, aiohttp_client: Any, store_url: str, keyring: Keyring
) -> None:
    """Starting with the credential in the config repairs the row (the start used to read it first)."""
    upstream = await start_upstream(aiohttp_server)
    auth = {"type": "bearer", "token": SECRET}
    declared = {"id": "cfg", "provider": "rest", "base_url": upstream.url + "/echo", "auth": auth}
    first = await make_gateway(credentials=[declared])
    async with first.app[appkeys.ENGINE].begin() as conn:
        await conn.execute(update(t.credentials).where(t.credentials.c.id == "cfg").values(base_url="http://a..b"))
    app = create_app(make_config(store_url, keyring, credentials=[declared]), keyring=keyring, ops_on_main=True)
    second = Gateway(await aiohttp_client(ServedLikeProduction(app)), "")
    second.admin_token = await app[appkeys.TOKENS].create(TokenIn(name="second", scopes=["admin"]))
    async with second.client.get("/v1/proxy/credential/cfg/x", headers=second.auth()) as resp:
        assert resp.status == 200, await resp.text()
