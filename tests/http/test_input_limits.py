"""Bad input is a 400 naming the field, on every JSON endpoint, and nothing that breaks later is stored."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from tests.conftest import GatewayFactory

CREDENTIAL = {
    "id": "cred",
    "provider": "rest",
    "base_url": "https://api.example.com/v1",
    "auth": {"type": "header", "name": "X-Api-Key", "value": "k3y-value"},
}
# Every endpoint that reads a JSON body (method, path); the objects they name are created first.
JSON_ENDPOINTS = [
    ("POST", "/v1/credentials"),
    ("PATCH", "/v1/credentials/cred"),
    ("POST", "/v1/syncs"),
    ("PATCH", "/v1/syncs/sync"),
    ("POST", "/v1/consumers"),
    ("PATCH", "/v1/consumers/pull"),
    ("POST", "/v1/consumers/pull/receive"),
    ("POST", "/v1/consumers/pull/ack"),
    ("POST", "/v1/consumers/pull/nack"),
    ("POST", "/v1/mutations/run"),
    ("POST", "/v1/tokens"),
]


async def _seeded(make_gateway: GatewayFactory, **sections: Any) -> Any:
    gw = await make_gateway(**sections)
    for path, body in (
        ("/v1/credentials", CREDENTIAL),
        ("/v1/syncs", {"id": "sync", "credential_id": "cred"}),  # rest: proxy-only
        ("/v1/consumers", {"id": "pull", "kind": "pull"}),
        (
            "/v1/consumers",
            {
                "id": "hook",
                "kind": "webhook",
                "url": "https://example.com/h",
                "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            },
        ),
    ):
        resp = await gw.client.post(path, json=body, headers=gw.auth())
        assert resp.status == 201, await resp.text()
    return gw


async def test_deep_nesting_is_400_on_every_json_endpoint(make_gateway: GatewayFactory) -> None:
    """100,000 levels used to end in RecursionError (500); now the scan refuses them before parsing."""
    gw = await _seeded(make_gateway)
    bodies = [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 5000 + b"1" + b"}" * 5000]
    for method, path in JSON_ENDPOINTS:
        for data in bodies:
            resp = await gw.client.request(method, path, data=data, headers=gw.auth())
            assert resp.status == 400, (method, path, await resp.text())
            body = await resp.json()
            assert body["code"] == "invalid_request" and "max_json_depth" in body["error"]


async def test_a_key_named_twice_in_one_object_is_400_naming_it_on_every_json_endpoint(
    make_gateway: GatewayFactory,
) -> None:
    """The last value silently won: ``{"scopes": ["proxy"], "scopes": ["admin"]}`` made an admin token,
    though a proxy, log or audit that reads the first value saw a proxy token asked for."""
    gw = await _seeded(make_gateway)
    for method, path in JSON_ENDPOINTS:
        resp = await gw.client.request(method, path, data=b'{"id": "a", "id": "b"}', headers=gw.auth())
        assert resp.status == 400, (method, path, await resp.text())
        body = await resp.json()
        assert body["code"] == "invalid_request" and body["fields"] == ["id"], (method, path, body)
    token = b'{"name": "t", "scopes": ["proxy"], "scopes": ["admin"]}'
    resp = await gw.client.post("/v1/tokens", data=token, headers=gw.auth())
    assert resp.status == 400 and (await resp.json())["fields"] == ["scopes"]
    mutation = b'{"kind": "create", "records": [{"data": {"a": 1}}, {"data": {"a": 1, "a": 2}}]}'
    resp = await gw.client.post("/v1/mutations/run", data=mutation, headers=gw.auth())
    assert resp.status == 400 and (await resp.json())["fields"] == ["records.1.data.a"]
    assert (await gw.client.get("/v1/tokens/t", headers=gw.auth())).status == 404


async def test_nesting_within_the_limit_and_brackets_in_strings_pass(make_gateway: GatewayFactory) -> None:
    gw = await _seeded(make_gateway, server={"max_json_depth": 8})
    auth = {"type": "header", "name": "X-Api-Key", "value": '[[[[[[[[[[{{{{{{{{{{ \\" [[[[[['}
    resp = await gw.client.patch("/v1/credentials/cred", json={"auth": auth}, headers=gw.auth())
    assert resp.status == 200, await resp.text()
    deep: Any = 1
    for _ in range(9):
        deep = [deep]
    resp = await gw.client.patch("/v1/syncs/sync", json={"options": {"x": deep}}, headers=gw.auth())
    assert resp.status == 400 and "8 levels" in (await resp.json())["error"]


async def test_mutation_data_nested_past_the_limit_is_refused_up_front(make_gateway: GatewayFactory) -> None:
    """``data`` 400 deep once reached the upstream and then failed the stream's serializer (500)."""
    gw = await _seeded(make_gateway)
    data: Any = {"leaf": 1}
    for _ in range(400):
        data = {"x": data}
    body = {"kind": "create", "sync_id": "sync", "collection_id": "rest:items", "records": [{"data": data}]}
    resp = await gw.client.post("/v1/mutations/run", json=body, headers=gw.auth())
    assert resp.status == 400
    assert (await resp.json())["code"] == "invalid_request"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (b'{"rate_limit": {"rate": 1e400}}', "body"),
        (b'{"rate_limit": {"max_wait": 1e400}}', "body"),
        (b'{"rate_limit": {"rate": NaN}}', "body"),
        (b'{"rate_limit": {"per": 1e-9}}', "rate_limit.per"),
        (b'{"rate_limit": {"max_wait": 1e300}}', "rate_limit.max_wait"),
        (b'{"timeouts": {"total": 1e300}}', "timeouts.total"),
        (b'{"rate_limit": {"burst": 1' + b"0" * 5000 + b"}}", "body"),
        # windows and rules are bounded like the bucket itself (their intervals overflowed at the first call)
        (b'{"rate_limit": {"windows": [{"rate": 5, "per": 1e308}]}}', "rate_limit.windows.0.per"),
        (b'{"rate_limit": {"rules": [{"match": {"path": "/a"}, "rate": 1e300, "per": 1}]}}', "rate_limit.rules.0.rate"),
        (b'{"rate_limit": {"rules": [{"match": {"path": "/a"}, "rate": 1, "per": 1e-300}]}}', "rate_limit.rules.0.per"),
        (b'{"rate_limit": {"rate": 1e-300, "per": 31622400}}', "rate_limit.rate"),
        (b'{"rate_limit": {"windows": [{"rate": 1e-300, "per": 60}]}}', "rate_limit.windows.0.rate"),
    ],
)
async def test_limits_must_be_finite_and_bounded(make_gateway: GatewayFactory, patch: bytes, field: str) -> None:
    gw = await _seeded(make_gateway)
    resp = await gw.client.patch("/v1/credentials/cred", data=patch, headers=gw.auth())
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["code"] == "invalid_request" and field in body["error"]
    stored = await (await gw.client.get("/v1/credentials/cred", headers=gw.auth())).json()
    assert stored["rate_limit"] is None and stored["timeouts"] is None


def test_an_infinite_limit_in_the_config_file_is_refused(tmp_path: Any) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[providers.stripe.rate_limit]\nrate = inf\n")
    with pytest.raises(ConfigError, match=r"providers\.stripe\.rate_limit\.rate"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("auth", "field"),
    [
        ({"type": "header", "name": "X-Key", "value": "abc\r\nX-Evil: 1"}, "auth.header.value"),
        ({"type": "header", "name": "X-Key", "value": "ok", "prefix": "Key\n"}, "auth.header.prefix"),
        ({"type": "bearer", "token": "abc\x00def"}, "auth.token"),  # a NUL: refused as the body is read, by its path
        ({"type": "basic", "username": "u\r", "password": ""}, "auth.basic.username"),
    ],
)
async def test_secrets_that_would_break_a_header_are_refused(
    make_gateway: GatewayFactory, auth: dict[str, str], field: str
) -> None:
    gw = await make_gateway()
    resp = await gw.client.post("/v1/credentials", json={**CREDENTIAL, "auth": auth}, headers=gw.auth())
    assert resp.status == 400
    body = await resp.json()
    assert body["code"] == "invalid_request" and field in body["error"]
    assert "abc" not in await resp.text()


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "Host", "Connection", "Expect", "TE"])
async def test_auth_headers_that_frame_the_request_are_refused(make_gateway: GatewayFactory, name: str) -> None:
    """Stored, ``Content-Length: k3y`` made every proxied call a 500 and ``Transfer-Encoding`` a hang."""
    gw = await make_gateway()
    auth = {"type": "header", "name": name, "value": "k3y-value"}
    resp = await gw.client.post("/v1/credentials", json={**CREDENTIAL, "auth": auth}, headers=gw.auth())
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["code"] == "invalid_request" and body["fields"] == ["auth.header.name"]
    auth["name"] = "Authorization"  # the usual home of a key with a prefix of its own stays open
    resp = await gw.client.post("/v1/credentials", json={**CREDENTIAL, "auth": auth}, headers=gw.auth())
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize("secret", ["whsec_%%%%not-base64-at-all%%", "whsec_AAAAAAAAAAAAAAAAA", "whsec_QUJD"])
async def test_webhook_secrets_are_decoded_when_written(make_gateway: GatewayFactory, secret: str) -> None:
    gw = await _seeded(make_gateway)
    hook = {"id": "h2", "kind": "webhook", "url": "https://example.com/h", "secret": secret}
    resp = await gw.client.post("/v1/consumers", json=hook, headers=gw.auth())
    assert resp.status == 400 and "secret" in (await resp.json())["error"]
    resp = await gw.client.patch("/v1/consumers/hook", json={"secret": secret}, headers=gw.auth())
    assert resp.status == 400 and "secret" in (await resp.json())["error"]


@pytest.mark.parametrize(
    ("consumer", "patch", "field"),
    [
        ("pull", {"url": "https://example.com/x"}, "url"),
        ("pull", {"dsn": "postgresql://u:p@h/db"}, "dsn"),
        ("hook", {"batch_size": 3000}, "batch_size"),
        ("hook", {"visibility_timeout": 5}, "visibility_timeout"),
    ],
)
async def test_consumer_patch_of_another_kind_or_out_of_range_is_400(
    make_gateway: GatewayFactory, consumer: str, patch: dict[str, Any], field: str
) -> None:
    gw = await _seeded(make_gateway)
    resp = await gw.client.patch(f"/v1/consumers/{consumer}", json=patch, headers=gw.auth())
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["code"] == "invalid_request" and any(field in f for f in body["fields"])


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://app:hunter2hunter2@db/app",
        "postgresql://app@db/app?password=hunter2hunter2&sslmode=require",
        "postgresql://app@db:5433/app?PassWord=hunter2hunter2",
        "postgresql://app:hunter2hunter2@db/app?sslpassword=hunter2hunter2",
    ],
)
async def test_dsn_passwords_are_masked_in_every_form(make_gateway: GatewayFactory, dsn: str) -> None:
    gw = await make_gateway()
    mirror = {"id": "mirror", "kind": "postgres", "dsn": dsn}
    created = await gw.client.post("/v1/consumers", json=mirror, headers=gw.auth())
    assert created.status == 201
    for resp in (
        created,
        await gw.client.get("/v1/consumers/mirror", headers=gw.auth()),
        await gw.client.get("/v1/consumers", headers=gw.auth()),
    ):
        text = await resp.text()
        assert "hunter2" not in text and "***" in text


@pytest.mark.parametrize(
    "authority",
    ["h:99999", "h:65536", "h:-1", "h:0", "h:x", "a..b", ".", "a b.example", "127.1", "2852039166", "999.1.1.1"],
)
async def test_urls_with_a_host_or_port_no_client_reaches_are_refused_when_written(
    make_gateway: GatewayFactory, authority: str
) -> None:
    """Stored, a port out of range or an empty host label (``a..b``) made every call to the URL a 500,
    and a host that is no name nor IPv4 address a 502 for ever; each URL field is checked."""
    gw = await make_gateway()
    oauth2 = {"type": "oauth2", "access_token": "a", "refresh_token": "r", "client_id": "c", "client_secret": "s"}
    for path, body, field in (
        ("/v1/credentials", {**CREDENTIAL, "base_url": f"http://{authority}/v1"}, "base_url"),
        (
            "/v1/credentials",
            {**CREDENTIAL, "auth": {**oauth2, "token_url": f"http://{authority}/t"}},
            "auth.oauth2.token_url",
        ),
        (
            "/v1/consumers",
            {
                "id": "h",
                "kind": "webhook",
                "url": f"http://{authority}/",
                "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            },
            "url",
        ),
    ):
        resp = await gw.client.post(path, json=body, headers=gw.auth())
        assert resp.status == 400, await resp.text()
        error = await resp.json()
        assert error["code"] == "invalid_request" and any(f.endswith(field) for f in error["fields"]), error
    assert (await gw.client.get("/v1/credentials", headers=gw.auth())).status == 200


@pytest.mark.parametrize("moment", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00"])
async def test_times_that_leave_the_calendar_in_utc_are_refused_when_written(
    make_gateway: GatewayFactory, moment: str
) -> None:
    """Year 0 or 10000 once in UTC: a stored OAuth2 expires_at like it made every proxied call a 500."""
    gw = await make_gateway()
    oauth2 = {
        "type": "oauth2",
        "access_token": "a",
        "refresh_token": "r",
        "token_url": "https://login.example.com/t",
        "client_id": "c",
        "client_secret": "s",
        "expires_at": moment,
    }
    for path, body, field in (
        ("/v1/credentials", {**CREDENTIAL, "auth": oauth2}, "auth.oauth2.expires_at"),
        ("/v1/tokens", {"name": "t", "scopes": ["proxy"], "expires_at": moment}, "expires_at"),
    ):
        resp = await gw.client.post(path, json=body, headers=gw.auth())
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["fields"] == [field]


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/tokens", {"name": "t", "scopes": ["proxy"], "only": ["sync:sync"] * 1001}, "only"),
        ("POST", "/v1/tokens", {"name": "t", "scopes": ["proxy"] * 1001}, "scopes"),
        ("PATCH", "/v1/syncs/stripe", {"collections": ["stripe:customer"] * 1001}, "collections"),
        ("PATCH", "/v1/consumers/pull", {"collections": ["stripe:customer"] * 1001}, "collections"),
        (
            "PATCH",
            "/v1/credentials/cred",
            {
                "auth": {
                    "type": "oauth2",
                    "access_token": "a",
                    "refresh_token": "r",
                    "token_url": "https://login.example.com/token",
                    "client_id": "c",
                    "client_secret": "s",
                    "scopes": ["read"] * 1001,
                }
            },
            "auth.oauth2.scopes",
        ),
    ],
)
async def test_lists_longer_than_a_thousand_entries_are_refused(
    make_gateway: GatewayFactory, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    """A list field takes at most 1,000 entries: 100,000 were stored, and every later read carried them."""
    gw = await _seeded(make_gateway)
    for create, created in (
        ("/v1/credentials", {**CREDENTIAL, "id": "stripe", "provider": "stripe", "base_url": "https://api.stripe.com"}),
        ("/v1/syncs", {"id": "stripe", "credential_id": "stripe"}),
    ):
        assert (await gw.client.post(create, json=created, headers=gw.auth())).status == 201
    resp = await gw.client.request(method, path, json=body, headers=gw.auth())
    assert resp.status == 400, await resp.text()
    answer = await resp.json()
    assert answer["code"] == "invalid_request" and any(f.startswith(field) for f in answer["fields"]), answer
    assert "1000" in str(answer), answer
    edge = {key: value[:1000] if isinstance(value, list) else value for key, value in body.items()}
    if "auth" not in body:  # the same list at the bound is taken
        assert (await gw.client.request(method, path, json=edge, headers=gw.auth())).status in (200, 201)
