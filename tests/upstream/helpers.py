"""Helpers for the proxy tests: a generic upstream on loopback and credential set-up."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from gateway.sandbox.generic import GenericState, create_generic_app
from tests.conftest import Gateway


@dataclass
class Upstream:
    url: str
    state: GenericState


async def start_upstream(aiohttp_server: Any) -> Upstream:
    """A generic sandbox upstream on a free 127.0.0.1 port (closed by the fixture at teardown)."""
    state = GenericState()
    server = await aiohttp_server(create_generic_app(state), host="127.0.0.1")
    return Upstream(str(server.make_url("")).rstrip("/"), state)


async def add_credential(
    gw: Gateway, base_url: str, auth: dict[str, Any] | None = None, *, cid: str = "cred-1", **extra: Any
) -> str:
    body = {
        "id": cid,
        "provider": extra.pop("provider", "rest"),
        "base_url": base_url,
        "auth": auth or {"type": "bearer", "token": "upstream-secret-token"},
        "rate_limit": {"rate": 10000, "per": 1, "burst": 10000},  # pacing is not what these tests check
        **extra,
    }
    resp = await gw.client.post("/v1/credentials", json=body, headers=gw.auth())
    assert resp.status == 201, await resp.text()
    return cid


async def add_sync(gw: Gateway, credential_id: str, sync_id: str = "sync-1") -> str:
    body = {"id": sync_id, "credential_id": credential_id}  # proxy-only: rest has no change capture
    resp = await gw.client.post("/v1/syncs", json=body, headers=gw.auth())
    assert resp.status == 201, await resp.text()
    return sync_id


def oauth2_auth(upstream: Upstream, *, access_token: str = "token-0", expires_at: str | None = None) -> dict[str, Any]:
    auth = {
        "type": "oauth2",
        "access_token": access_token,
        "refresh_token": upstream.state.refresh_token,
        "token_url": f"{upstream.url}/oauth/token",
        "client_id": upstream.state.client_id,
        "client_secret": upstream.state.client_secret,
    }
    if expires_at is not None:
        auth["expires_at"] = expires_at
    return auth


async def raw_request(gw: Gateway, request_line: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Send ``request_line`` byte for byte (no client-side URL normalization); status and body back."""
    server = gw.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    lines = [request_line, f"Host: {server.host}:{server.port}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in {**gw.auth(), **(headers or {})}.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
