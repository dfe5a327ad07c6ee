"""Health, readiness and metrics: tokenless, on their own listener by default."""

from __future__ import annotations

from typing import Any

import aiohttp

from gateway.app import create_app
from gateway.vault.crypto import Keyring
from tests.conftest import GatewayFactory, make_config
from tests.support import free_port


async def test_probes_and_metrics_need_no_token(make_gateway: GatewayFactory) -> None:
    """healthz, readyz and metrics answer without a token; readyz checks the store."""
    gw = await make_gateway()
    assert (await gw.client.get("/healthz")).status == 200
    ready = await gw.client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["checks"]["store"] is True
    await gw.client.get("/v1/credentials", headers=gw.auth())
    text = await (await gw.client.get("/metrics")).text()
    assert 'gateway_http_requests_total{method="GET",route="management",status="200"} 1.0' in text


async def test_metrics_listener_is_separate_by_default(aiohttp_client: Any, store_url: str, keyring: Keyring) -> None:
    """With the default layout the probes live on the metrics port, not on the API port."""
    port = free_port()
    app = create_app(make_config(store_url, keyring, metrics={"port": port}), keyring=keyring)
    client = await aiohttp_client(app)
    assert (await client.get("/healthz")).status == 404
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert "gateway_http_requests_total" in await resp.text()
        for method, path, status, code in (
            ("GET", "/nope", 404, "not_found"),
            ("POST", "/metrics", 405, "method_not_allowed"),
        ):
            async with session.request(method, f"http://127.0.0.1:{port}{path}") as resp:  # was aiohttp's plain text
                assert (resp.status, (await resp.json())["code"]) == (status, code)
