"""OAuth2 refresh through the proxy: before expiry, after a 401, single-flight, failures."""

from __future__ import annotations

import asyncio
import time
import traceback
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import select

from gateway.app import create_app
from gateway.errors import UpstreamAuthFailed
from gateway.http import appkeys
from gateway.store import tables as t
from gateway.vault.crypto import Keyring
from tests.conftest import Gateway, GatewayFactory, make_config
from tests.upstream.helpers import Upstream, add_credential, oauth2_auth, start_upstream

PAST = "2020-01-01T00:00:00Z"


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    return await start_upstream(aiohttp_server)


async def _stored_token(gw: Gateway) -> str:
    credential = await gw.app[appkeys.OBJECTS].credential("cred-1")
    return str(credential.auth.access_token.get_secret_value())


async def test_expired_token_is_refreshed_before_the_call(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A token past its expiry is refreshed first; the new one is used and stored encrypted."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/protected", oauth2_auth(upstream, access_token="old", expires_at=PAST))
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
    assert resp.status == 200, await resp.text()
    assert upstream.state.refreshes == 1
    assert await _stored_token(gw) == "token-1"
    async with gw.app[appkeys.ENGINE].connect() as conn:
        sealed = (await conn.execute(select(t.credentials.c.auth_secret))).scalar_one()
    assert "token-1" not in sealed and "refresh-1" not in sealed


async def test_401_refreshes_once_and_retries(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A 401 for a held request triggers one refresh and one transparent retry."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/protected", oauth2_auth(upstream, access_token="revoked"))
    resp = await gw.client.post("/v1/proxy/credential/cred-1/x", json={"a": 1}, headers=gw.auth())
    assert resp.status == 200
    assert (await resp.json())["headers"]["authorization"] == ["Bearer token-1"]
    assert upstream.state.refreshes == 1
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'gateway_oauth_refreshes_total{outcome="success",provider="rest"} 1.0' in metrics


async def test_concurrent_401s_share_one_refresh(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """100 concurrent requests that all meet a 401 cause exactly one refresh and all succeed."""
    gw = await make_gateway()
    upstream.state.token_delay = 0.2
    await add_credential(gw, upstream.url + "/protected", oauth2_auth(upstream, access_token="revoked"))
    responses = await asyncio.gather(
        *(gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth()) for _ in range(100))
    )
    assert [r.status for r in responses] == [200] * 100
    assert upstream.state.refreshes == 1


async def test_replicas_share_one_refresh(
    make_gateway: GatewayFactory, upstream: Upstream, aiohttp_client: Any, keyring: Keyring, store_url: str
) -> None:
    """Two gateways on one store refresh an expired token once between them (lease + re-read)."""
    first = await make_gateway()
    second = await aiohttp_client(create_app(make_config(store_url, keyring), keyring=keyring, ops_on_main=True))
    upstream.state.token_delay = 0.2
    await add_credential(first, upstream.url + "/protected", oauth2_auth(upstream, access_token="old", expires_at=PAST))
    clients = (first.client, second) * 20
    calls = [client.get("/v1/proxy/credential/cred-1/x", headers=first.auth()) for client in clients]
    responses = await asyncio.gather(*calls)
    assert [r.status for r in responses] == [200] * 40
    assert upstream.state.refreshes == 1


async def test_streamed_body_gets_the_401_and_the_next_call_the_new_token(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """A 401 on a streamed body is returned as is, after refreshing for the calls that follow."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/protected", oauth2_auth(upstream, access_token="revoked"))

    async def body() -> Any:
        yield b"streamed"

    resp = await gw.client.post("/v1/proxy/credential/cred-1/x", data=body(), headers=gw.auth())
    assert resp.status == 401
    assert upstream.state.refreshes == 1
    assert (await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())).status == 200


async def test_refresh_failure_is_502_upstream_auth_failed(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A token endpoint that refuses the refresh answers 502 upstream_auth_failed, without secrets."""
    gw = await make_gateway()
    upstream.state.token_status = 400
    await add_credential(gw, upstream.url + "/protected", oauth2_auth(upstream, access_token="old", expires_at=PAST))
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
    assert resp.status == 502
    text = await resp.text()
    assert '"upstream_auth_failed"' in text and upstream.state.client_secret not in text
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'gateway_oauth_refreshes_total{outcome="failure",provider="rest"} 1.0' in metrics


@pytest.mark.parametrize("status", [302, 307, 308])
async def test_a_redirecting_token_endpoint_is_not_followed(
    make_gateway: GatewayFactory, upstream: Upstream, aiohttp_server: Any, status: int
) -> None:
    """A token endpoint answering a redirect is a refused refresh: the form, which carries the client
    secret and the refresh token, is never sent on to where the redirect points."""
    elsewhere: list[bytes] = []

    async def collect(request: web.Request) -> web.Response:
        elsewhere.append(await request.read())
        return web.json_response({"access_token": "stolen", "expires_in": 3600})

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": str(other.make_url("/collect"))})

    collector = web.Application()
    collector.router.add_route("*", "/collect", collect)
    other = await aiohttp_server(collector, host="127.0.0.1")
    redirector = web.Application()
    redirector.router.add_post("/oauth/token", redirect)
    token_server = await aiohttp_server(redirector, host="127.0.0.1")
    auth = {
        **oauth2_auth(upstream, access_token="old", expires_at=PAST),
        "token_url": str(token_server.make_url("/oauth/token")),
    }
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/protected", auth)
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
    assert resp.status == 502
    assert (await resp.json())["code"] == "upstream_auth_failed"
    assert elsewhere == [] and upstream.state.requests == 0


async def test_rejected_after_refresh_is_502(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """An upstream that still answers 401 with the fresh token gives 502 upstream_auth_failed."""
    gw = await make_gateway()
    upstream.state.reject_all = True
    await add_credential(gw, upstream.url + "/protected", oauth2_auth(upstream, access_token="revoked"))
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
    assert resp.status == 502
    assert (await resp.json())["code"] == "upstream_auth_failed"
    assert upstream.state.refreshes == 1


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (b'{"access_token": "fresh", "expires_in": 1e300}', 200),  # past timedelta's range: ten years
        (b'{"access_token": "fresh", "expires_in": Infinity}', 502),  # not JSON, as every upstream answer is read
        (b'{"access_token": "fresh", "expires_in": -5}', 200),  # nonsense: the expiry is not said
        (b"[" * 50_000, 502),  # not a token answer at all
        (b'{"access_token": "fresh\\r\\nX-Evil: 1", "expires_in": 60}', 502),  # stored, every call was a 500
        (b'{"access_token": "fre\\u0000sh"}', 502),
        (b'{"access_token": ""}', 502),  # was sent as "Authorization: Bearer"
        (b'{"access_token": "fresh", "refresh_token": "r\\n"}', 502),
    ],
)
async def test_a_token_endpoints_odd_answer_is_never_a_500(
    make_gateway: GatewayFactory, aiohttp_server: Any, answer: bytes, status: int
) -> None:
    """The token endpoint is someone else's server: an overflowing ``expires_in`` or JSON nested past the
    parser's recursion limit made the refresh, and so the proxied call, a 500."""
    from aiohttp import web

    calls: list[str] = []

    async def token(request: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json")

    async def api(request: web.Request) -> web.Response:
        calls.append(request.headers.get("Authorization", ""))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/api/{tail:.*}", api)
    server = await aiohttp_server(app, host="127.0.0.1")
    base = str(server.make_url("")).rstrip("/")
    gw = await make_gateway()
    await add_credential(gw, base + "/api", _expired_oauth2(base + "/oauth/token"))
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
    assert resp.status == status, await resp.text()
    assert calls == (["Bearer fresh"] if status == 200 else [])
    if status == 200:  # the stored expiry is a time every later call can compare with now
        again = await gw.client.get("/v1/proxy/credential/cred-1/y", headers=gw.auth())
        assert again.status == 200 and calls == ["Bearer fresh", "Bearer fresh"]


async def test_a_token_endpoint_answer_past_max_json_bytes_fails_the_refresh_at_once(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """The answer was read whole: an endless one held the refresh, and the call waiting on it, for the
    token endpoint's 30 s timeout, its bytes piling up in memory. Past ``server.max_json_bytes`` the
    refresh fails."""
    stop = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await resp.write(b'{"access_token": "')
        while not stop.is_set():
            await resp.write(b"a" * 65536)
            await asyncio.sleep(0.01)  # a server that keeps talking
        return resp

    app = web.Application()
    app.router.add_post("/oauth/token", endless)
    server = await aiohttp_server(app, host="127.0.0.1")
    base = str(server.make_url("")).rstrip("/")
    try:
        gw = await make_gateway(server={"max_json_bytes": 1 << 20})
        await add_credential(gw, base + "/api", _expired_oauth2(base + "/oauth/token"))
        started = time.monotonic()
        resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
        assert resp.status == 502 and (await resp.json())["code"] == "upstream_auth_failed"
        assert time.monotonic() - started < 10, "the refresh waited for the endless answer"
    finally:
        stop.set()


def _expired_oauth2(token_url: str) -> dict[str, Any]:
    """An OAuth2 auth whose access token expired: the next call refreshes it at ``token_url``."""
    return {
        "type": "oauth2",
        "access_token": "old",
        "refresh_token": "r",
        "token_url": token_url,
        "client_id": "c",
        "client_secret": "s",
        "expires_at": PAST,
    }


async def test_a_refused_token_answer_is_not_chained_into_the_refresh_error(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """The ValidationError of a refused token answer quotes its input, the token: the refresh's error
    does not carry it, so no traceback of it can print the token."""

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "sekrit-token\r\nX-Evil: 1"})

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    server = await aiohttp_server(app, host="127.0.0.1")
    base = str(server.make_url("")).rstrip("/")
    gw = await make_gateway()
    await add_credential(gw, base + "/api", _expired_oauth2(base + "/oauth/token"))
    credential = await gw.app[appkeys.OBJECTS].credential("cred-1")
    with pytest.raises(UpstreamAuthFailed) as refused:
        await gw.app[appkeys.UPSTREAM].oauth2.refresh(credential, stale_token="old")
    assert "sekrit-token" not in "".join(traceback.format_exception(refused.value))
