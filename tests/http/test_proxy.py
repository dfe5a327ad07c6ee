"""Proxy routing, access control, path safety and header handling against a real upstream."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.conftest import GatewayFactory
from tests.upstream.helpers import Upstream, add_credential, add_sync, raw_request, start_upstream


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    return await start_upstream(aiohttp_server)


async def test_sync_route_reaches_the_credentials_base_url(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A sync id resolves to its credential and the path and query are appended to the base URL."""
    gw = await make_gateway()
    await add_sync(gw, await add_credential(gw, upstream.url + "/echo/base"))
    resp = await gw.client.get("/v1/proxy/sync/sync-1/v1/items?b=2&a=%20x", headers=gw.auth())
    assert resp.status == 200, await resp.text()
    echo = await resp.json()
    assert echo["path"] == "/echo/base/v1/items"
    assert echo["query"] == "b=2&a=%20x"
    assert "x-gateway-pacing-wait-ms" in resp.headers and resp.headers["x-request-id"]


async def test_unknown_ids_are_404_without_upstream_traffic(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """Unknown sync and credential ids answer 404 not_found and the upstream sees nothing."""
    gw = await make_gateway()
    for path in ("/v1/proxy/sync/nope/x", "/v1/proxy/credential/nope/x"):
        resp = await gw.client.get(path, headers=gw.auth())
        assert resp.status == 404
        assert (await resp.json())["code"] == "not_found"
    assert upstream.state.requests == 0


async def test_token_limited_to_other_ids_is_403(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A token restricted with --only to another id may not proxy through this one."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    allowed = await gw.token("limited", ["proxy"], only=["credential:other"])
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth(allowed))
    assert resp.status == 403
    assert upstream.state.requests == 0
    ok = await gw.token("ok", ["proxy"], only=["credential:cred-1"])
    assert (await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth(ok))).status == 200


async def test_token_without_proxy_scope_is_403(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """The proxy routes require the proxy scope."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    token = await gw.token("consumer-only", ["consumers"])
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth(token))
    assert resp.status == 403
    assert upstream.state.requests == 0


@pytest.mark.parametrize(
    "path",
    [
        "../secret",
        "a/../../secret",
        "%2e%2e/secret",
        "%2E%2e/secret",
        ".%2E/secret",
        "%252e%252e/secret",
        "a%2F..%2F..%2Fsecret",
        "a%5c..%5c..%5csecret",
        "/evil.example/x",
        "%2fevil.example/x",
        "a/%00b",
        "a/%0d%0aX-Injected:%201",
        "%25252525252e",
        "%u002e%u002e/secret",  # IIS's own escapes
        "%uff0e%uff0e/secret",
    ],
)
async def test_hostile_paths_are_400_and_never_sent(
    make_gateway: GatewayFactory, upstream: Upstream, path: str
) -> None:
    """Every class of escaping path answers 400 invalid_path before any upstream traffic."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo/base")
    status, body = await raw_request(gw, f"GET /v1/proxy/credential/cred-1/{path} HTTP/1.1")
    assert status == 400, body
    assert json.loads(body)["code"] == "invalid_path"
    assert upstream.state.requests == 0


async def test_dot_segments_below_the_base_are_resolved(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """``a/./b/../c`` stays below the base, so it is sent as ``a/c``."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo/base")
    status, body = await raw_request(gw, "GET /v1/proxy/credential/cred-1/a/./b/../c HTTP/1.1")
    assert status == 200 and json.loads(body)["path"] == "/echo/base/a/c"


async def test_headers_are_filtered_replaced_and_added(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """Hop-by-hop and Connection-named headers are dropped, Authorization replaced, X-Forwarded-* added."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    headers = {
        **gw.auth(),
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "drop me",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "X-Custom": "kept",
        "Cookie": "a=1",
        "Accept": "application/json",
    }
    resp = await gw.client.get("/v1/proxy/credential/cred-1/h", headers=headers)
    seen = (await resp.json())["headers"]
    for dropped in ("x-hop", "keep-alive", "te", "proxy-authorization"):
        assert dropped not in seen
    assert seen["authorization"] == ["Bearer upstream-secret-token"]
    assert seen["x-custom"] == ["kept"] and seen["cookie"] == ["a=1"] and seen["accept"] == ["application/json"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"] and seen["x-forwarded-proto"] == ["http"]
    assert seen["host"][0] == upstream.url.split("://", 1)[1]
    assert resp.headers["X-RateLimit-Remaining"] == "99" and "session=abc" in resp.headers["Set-Cookie"]


async def test_no_automatic_headers_are_added(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """The upstream sees no User-Agent, Accept, Accept-Encoding or Content-Type the client did not send."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    status, body = await raw_request(gw, "GET /v1/proxy/credential/cred-1/h HTTP/1.1")
    seen = json.loads(body)["headers"]
    assert status == 200 and "x-forwarded-proto" in seen
    for added in ("user-agent", "accept", "accept-encoding", "content-type"):
        assert added not in seen


async def test_redirects_are_passed_back_not_followed(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """An upstream 302 reaches the client with its Location header."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url)
    resp = await gw.client.get("/v1/proxy/credential/cred-1/redirect", headers=gw.auth(), allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/echo/redirected"
    assert upstream.state.paths == ["/redirect"]


async def test_compressed_bodies_pass_through_untouched(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A gzip body is relayed byte for byte with its Content-Encoding, not decompressed."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url)
    resp = await gw.client.get("/v1/proxy/credential/cred-1/gzip", headers=gw.auth(), auto_decompress=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    assert (await resp.read())[:2] == b"\x1f\x8b"


@pytest.mark.parametrize(
    ("auth", "header", "value", "query"),
    [
        ({"type": "bearer", "token": "tok-123"}, "authorization", "Bearer tok-123", ""),
        (
            {"type": "basic", "username": "sk_test_abc", "password": ""},
            "authorization",
            "Basic " + base64.b64encode(b"sk_test_abc:").decode(),
            "",
        ),
        ({"type": "header", "name": "X-API-Key", "value": "k-1"}, "x-api-key", "k-1", ""),
        ({"type": "header", "name": "X-Token", "value": "k-2", "prefix": "Token "}, "x-token", "Token k-2", ""),
        ({"type": "query", "name": "api_key", "value": "q-1"}, None, None, "x=1&api_key=q-1"),
    ],
)
async def test_auth_is_injected_per_type(
    make_gateway: GatewayFactory,
    upstream: Upstream,
    auth: dict[str, Any],
    header: str | None,
    value: str | None,
    query: str,
) -> None:
    """Each static auth type reaches the upstream as SPEC.md describes, and the client's never does."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo", auth)
    resp = await gw.client.get("/v1/proxy/credential/cred-1/a?x=1&api_key=client-tries", headers=gw.auth())
    echo = await resp.json()
    if header is not None:
        assert echo["headers"][header] == [value]
    if query:
        assert echo["query"] == query
    assert gw.admin_token not in str(echo)


async def test_unknown_method_is_405_json(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A method outside the proxy's list answers the JSON 405, not a traceback."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    resp = await gw.client.request("PROPFIND", "/v1/proxy/credential/cred-1/x", headers=gw.auth())
    assert resp.status == 405
    assert (await resp.json())["code"] == "method_not_allowed"
    assert "PATCH" in resp.headers["Allow"].split(", ")
    assert upstream.state.requests == 0


@pytest.mark.parametrize(
    ("request_line", "headers", "reason"),
    [
        ("BREW /v1/proxy/credential/cred-1/x HTTP/1.1", {}, "Invalid method"),
        ("GET /v1/proxy/credential/cred-1/x HTTP/1.1", {"X-Bad": "a\x01b"}, "Invalid header value char"),
        ("GET /v1/proxy/credential/cred-1/x HTTP/1.1", {"Content-Length": "12abc"}, "Content-Length"),
        ("GET /v1/proxy/credential/cred-1/x HTTP/1.1", {"X-Long": "leaky-" + "a" * 9000}, "8190 bytes"),
    ],
)
async def test_requests_the_http_parser_refuses_get_the_json_400(
    make_gateway: GatewayFactory, upstream: Upstream, request_line: str, headers: dict[str, str], reason: str
) -> None:
    """A method outside HTTP's grammar or a malformed header: the JSON 400, the bytes never echoed or logged."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    secret_header = {"X-Api-Key": "leaky-secret-value\x01"} if "X-Bad" in headers else {}
    with capture_logs() as events:
        status, body = await raw_request(gw, request_line, {**headers, **secret_header})
    assert status == 400
    answer = json.loads(body)
    assert answer["code"] == "invalid_request" and reason in answer["error"]
    assert "BREW" not in answer["error"] and "leaky" not in answer["error"]
    assert [e["event"] for e in events] == ["bad_http_request"]
    assert "leaky" not in str(events)
    assert upstream.state.requests == 0


async def test_every_listed_method_is_relayed(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """GET, POST, PUT, PATCH, DELETE, HEAD and OPTIONS all reach the upstream with their method."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
        resp = await gw.client.request(method, "/v1/proxy/credential/cred-1/m", headers=gw.auth(), data=b"{}")
        assert (await resp.json())["method"] == method
    head = await gw.client.head("/v1/proxy/credential/cred-1/m", headers=gw.auth())
    assert head.status == 200 and int(head.headers["Content-Length"]) > 0


async def test_request_log_names_the_upstream_and_never_the_secret(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """The request log line carries provider and pacing wait; the query secret appears in no event."""
    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo", {"type": "query", "name": "api_key", "value": "q-secret-123"})
    with capture_logs() as events:
        resp = await gw.client.get("/v1/proxy/credential/cred-1/a?x=1", headers=gw.auth())
        assert resp.status == 200
    line = next(e for e in events if e["event"] == "request" and e["route"] == "proxy_credential")
    assert line["upstream"] == "rest" and isinstance(line["pacing_wait_ms"], float)
    assert "q-secret-123" not in str(events)


async def test_upstream_cookies_are_not_kept_between_calls(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """A ``Set-Cookie`` is relayed to the client that got it, never stored and sent on another's call."""
    gw = await make_gateway()
    # A host name: aiohttp's cookie jar ignores cookies from IP addresses.
    await add_credential(gw, upstream.url.replace("127.0.0.1", "localhost") + "/echo")
    first = await gw.client.get("/v1/proxy/credential/cred-1/h", headers=gw.auth())
    assert "session=abc" in first.headers["Set-Cookie"]
    gw.client.session.cookie_jar.clear()  # the test client's own jar: this is another client
    second = await gw.client.get("/v1/proxy/credential/cred-1/h", headers=gw.auth())
    assert "cookie" not in (await second.json())["headers"]


async def test_a_gzip_request_body_goes_upstream_as_the_client_encoded_it(
    make_gateway: GatewayFactory, upstream: Upstream
) -> None:
    """The gateway decoded such a body, which then fell short of its Content-Length: a 400 for any client
    compressing its uploads. JSON APIs read bodies as sent, so an encoded one is refused naming the header."""
    import gzip

    gw = await make_gateway()
    await add_credential(gw, upstream.url + "/echo")
    packed = gzip.compress(b'{"name": "Paul"}')
    headers = {**gw.auth(), "Content-Encoding": "gzip", "Content-Type": "application/json"}
    resp = await gw.client.post("/v1/proxy/credential/cred-1/x", data=packed, headers=headers)
    assert resp.status == 200, await resp.text()
    seen = await resp.json()
    assert seen["headers"]["content-encoding"] == ["gzip"] and seen["body"] == '{"name": "Paul"}'
    resp = await gw.client.post("/v1/tokens", data=gzip.compress(b"{}"), headers=headers)
    assert resp.status == 400 and (await resp.json())["fields"] == ["Content-Encoding"]
