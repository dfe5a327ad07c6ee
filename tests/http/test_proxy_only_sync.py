"""Proxy-only syncs: a sync whose ``collections`` are empty or absent binds a credential for the proxy only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from tests.conftest import GatewayFactory
from tests.upstream.helpers import Upstream, add_credential, start_upstream


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    return await start_upstream(aiohttp_server)


@pytest.mark.parametrize("body", [{}, {"collections": []}], ids=["absent", "empty"])
async def test_a_sync_without_collections_proxies(
    make_gateway: GatewayFactory, upstream: Upstream, body: dict[str, Any]
) -> None:
    gw = await make_gateway()
    credential = await add_credential(gw, upstream.url + "/echo/base")
    resp = await gw.client.post(
        "/v1/syncs", json={"id": "proxy-only", "credential_id": credential, **body}, headers=gw.auth()
    )
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["collections"] == []
    proxied = await gw.client.get("/v1/proxy/sync/proxy-only/v1/payment_intents", headers=gw.auth())
    assert proxied.status == 200 and (await proxied.json())["path"] == "/echo/base/v1/payment_intents"
    mutation = {"sync_id": "proxy-only", "collection_id": "rest:things", "records": [{"data": {"name": "x"}}]}
    refused = await gw.client.post("/v1/mutations/run", json={"kind": "create", **mutation}, headers=gw.auth())
    assert refused.status == 404 and (await refused.json())["code"] == "not_found"


async def test_a_sync_can_drop_all_its_collections(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    gw = await make_gateway()
    stripe = {
        "id": "cred-stripe",
        "provider": "stripe",
        "base_url": upstream.url,
        "auth": {"type": "bearer", "token": "sk"},
    }
    assert (await gw.client.post("/v1/credentials", json=stripe, headers=gw.auth())).status == 201
    body = {"id": "s", "credential_id": "cred-stripe", "collections": ["stripe:customer"]}
    assert (await gw.client.post("/v1/syncs", json=body, headers=gw.auth())).status == 201
    resp = await gw.client.patch("/v1/syncs/s", json={"collections": []}, headers=gw.auth())
    assert resp.status == 200 and (await resp.json())["collections"] == []


def test_a_declared_sync_may_omit_collections(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text('[[syncs]]\nid = "sync-67b58087"\ncredential_id = "credential-stripe"\n')
    assert load_config(path, environ={}).syncs[0].collections == []
