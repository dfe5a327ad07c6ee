"""Fuzzing every JSON endpoint: whatever the body (deep nesting, huge numbers, wrong kinds, unknown
fields, not JSON at all), the answer is a JSON error below 500 (a 400 listing the failing ``fields``),
never a crash.

The objects the endpoints name exist (a credential pointing at a loopback sandbox, a sync, consumers),
so bodies get past the 404s and into validation; a body that happens to be valid is served normally.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Gateway, GatewayFactory
from tests.http.test_input_limits import JSON_ENDPOINTS
from tests.upstream.helpers import start_upstream

# The JSON endpoints of test_input_limits, and the PATCH of the two other consumer kinds.
ENDPOINTS = [*JSON_ENDPOINTS, ("PATCH", "/v1/consumers/hook"), ("PATCH", "/v1/consumers/mirror")]
# Every field name the JSON APIs know, so generated objects hit real validators, not only "extra".
FIELDS = [
    "id",
    "provider",
    "base_url",
    "auth",
    "type",
    "token",
    "username",
    "password",
    "name",
    "value",
    "prefix",
    "access_token",
    "refresh_token",
    "token_url",
    "client_id",
    "client_secret",
    "expires_at",
    "scopes",
    "rate_limit",
    "rate",
    "per",
    "burst",
    "max_wait",
    "max_concurrency",
    "timeouts",
    "connect",
    "total",
    "read",
    "ca_bundle",
    "credential_id",
    "collections",
    "options",
    "kind",
    "url",
    "secret",
    "batch_size",
    "timeout",
    "max_retry_duration",
    "dsn",
    "table_prefix",
    "visibility_timeout",
    "sync_id",
    "wait_for",
    "ack_ids",
    "delay_ms",
    "records",
    "data",
    "upstream_id",
    "upstream_ids",
    "collection_id",
    "await_consumer_ids",
    "await_consumers_timeout",
    "only",
    "priority",
    "weight",
]
HOSTILE: st.SearchStrategy[Any] = st.sampled_from(
    [
        "bearer",
        "header",
        "oauth2",
        "pull",
        "webhook",
        "postgres",
        "create",
        "update",
        "delete",
        "rest",
        "stripe",
        "rest:items",
        "stripe:customer",
        "cred",
        "sync",
        "pull",
        "https://api.example.com",
        "http://127.0.0.1:1/x",
        "https://x/../..",
        "whsec_QUJD",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "postgresql://u:p@h/db?password=x",
        "a\r\nb",
        "\x00",
        "%2e%2e",
        "..;",
        "\uff0e\uff0e",
        "",
        " ",
        "9" * 5000,
        "2000-01-01T00:00:00Z",
        10**300,
        -(10**300),
        2**63,
        -1,
        0,
        1e308,
        -1e308,
        5e-324,
        True,
        None,
        [],
        {},
    ]
)
SCALARS = st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False, allow_infinity=False)
LEAVES = SCALARS | st.text(max_size=30) | HOSTILE
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=25,
)
OBJECTS = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=8)
RAW = st.sampled_from(
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 3000 + b"1" + b"}" * 3000,
        b'{"rate_limit": {"rate": 1e400}}',
        b'{"batch_size": 1e400}',
        b'{"wait_for": NaN}',
        b'{"x": Infinity}',
        b'{"a": 1' + b"0" * 5000 + b"}",
        b"",
        b" ",
        b"null",
        b"[]",
        b"\xff\xfe",
        b'{"a": "\xed\xa0\x80"}',
        b"{" * 64 + b"}" * 64,
    ]
)


def _encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


BODIES = RAW | OBJECTS.map(_encoded) | VALUES.map(_encoded)


async def _seeded(make_gateway: GatewayFactory, upstream_url: str) -> Gateway:
    gw = await make_gateway()
    for path, body in (
        (
            "/v1/credentials",
            {"id": "cred", "provider": "rest", "base_url": upstream_url, "auth": {"type": "bearer", "token": "t0ken"}},
        ),
        ("/v1/syncs", {"id": "sync", "credential_id": "cred", "collections": []}),  # rest reads nothing
        ("/v1/consumers", {"id": "pull", "kind": "pull"}),
        (
            "/v1/consumers",
            {
                "id": "hook",
                "kind": "webhook",
                "url": "http://127.0.0.1:1/hook",
                "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            },
        ),
        ("/v1/consumers", {"id": "mirror", "kind": "postgres", "dsn": "postgresql://u:p@127.0.0.1:1/db"}),
    ):
        resp = await gw.client.post(path, json=body, headers=gw.auth())
        assert resp.status == 201, await resp.text()
    return gw


@pytest.fixture
def cache() -> dict[str, Gateway]:
    """Holds the one seeded gateway of a test across all of its examples."""
    return {}


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(endpoint=st.sampled_from(ENDPOINTS), body=BODIES)
async def test_no_body_makes_a_json_endpoint_answer_5xx(
    make_gateway: GatewayFactory,
    aiohttp_server: Any,
    cache: dict[str, Gateway],
    endpoint: tuple[str, str],
    body: bytes,
) -> None:
    if "gw" not in cache:
        upstream = await start_upstream(aiohttp_server)
        cache["gw"] = await _seeded(make_gateway, upstream.url + "/api")
    gw = cache["gw"]
    method, path = endpoint
    resp = await gw.client.request(method, path, data=body, headers={**gw.auth(), "Content-Type": "application/json"})
    text = await resp.text()
    assert resp.status < 500, (method, path, body[:200], text)
    if resp.status >= 400:
        error = json.loads(text)
        assert error["code"], text
        if error["code"] == "invalid_request":  # names the field, as docs/api.md promises every 400 does
            assert error["fields"] and all(isinstance(f, str) and f for f in error["fields"]), text
