"""Proxy calls are dispatched before aiohttp's router (http/fastpath.py), with the router's answers."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.upstream.helpers import Upstream, add_credential, add_sync, raw_request, start_upstream


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    return await start_upstream(aiohttp_server)


async def test_proxy_calls_skip_the_router_and_others_do_not(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """Counted at the router: a proxied call (either kind) never asks it, a management call does, and
    the proxied answer still carries what the middleware and the response signal add."""
    gw = await make_gateway()
    await add_sync(gw, await add_credential(gw, upstream.url + "/echo"))
    router = gw.app.router
    asked: list[str] = []
    resolve = router.resolve

    async def counting(request: Any) -> Any:
        asked.append(request.path)
        return await resolve(request)

    router.resolve = counting
    for path in ("/v1/proxy/credential/cred-1/a/b?x=1", "/v1/proxy/sync/sync-1/a"):
        resp = await gw.client.get(path, headers=gw.auth())
        assert resp.status == 200, await resp.text()
        assert resp.headers["x-request-id"] and "x-gateway-pacing-wait-ms" in resp.headers
    assert asked == []
    assert (await gw.client.get("/v1/credentials", headers=gw.auth())).status == 200
    assert asked == ["/v1/credentials"]


@pytest.mark.parametrize(
    ("method", "target", "headers", "status", "code"),
    [
        ("TRACE", "/v1/proxy/credential/cred-1/x", {}, 405, "method_not_allowed"),  # the router's allowed set
        ("GET", "/v1/proxy/credential/cred-1", {}, 404, "not_found"),  # no path part: no route
        ("GET", "/v1/proxy/other/cred-1/x", {}, 404, "not_found"),
        ("GET", "/v1/proxy/credential/a%2Fb/x", {}, 400, "invalid_path"),  # an encoded slash in the id
        ("GET", "/v1/proxy/credential/nope/x", {}, 404, "not_found"),
        ("GET", "/v1/proxy/credential/cred-1/../../credentials", {}, 400, "invalid_path"),  # dots kept, refused
        ("GET", "/v1/proxy/credential/cred-1/x", {"Authorization": "Bearer gw_wrong"}, 401, "unauthorized"),
        ("GET", "/v1/proxy/credential/cred-1/x", {"x-gateway-priority": "urgent"}, 400, "invalid_request"),
    ],
)
async def test_edge_requests_get_the_routers_answer(
    make_gateway: GatewayFactory,
    upstream: Upstream,
    method: str,
    target: str,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    """Requests the fast path does not take, or takes and refuses, answer as through the router."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    got, body = await raw_request(gw, f"{method} {target} HTTP/1.1", headers)
    assert got == status, body
    assert f'"code": "{code}"'.encode() in body or f'"code":"{code}"'.encode() in body
    assert upstream.state.requests == 0


async def test_expect_100_continue_still_gets_its_interim_answer(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """A body sent after ``Expect: 100-continue`` (aiohttp's path, not the fast one) still reaches the upstream."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    resp = await gw.client.post(
        "/v1/proxy/credential/cred-1/x", data=b"hello", headers={**gw.auth(), "Expect": "100-continue"}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["body"] == "hello"
