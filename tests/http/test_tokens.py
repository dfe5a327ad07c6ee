"""API tokens over HTTP: create (shown once), list, show, revoke, expiry, and the pacing fields."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from gateway.http import appkeys
from tests.conftest import Gateway, GatewayFactory


async def _create(gw: Gateway, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await gw.client.post("/v1/tokens", json=body, headers=gw.auth())
    return resp.status, await resp.json()


async def test_created_token_is_shown_once_and_works(make_gateway: GatewayFactory) -> None:
    """201 carries the token and its fields; reads never carry it; the token authenticates at once."""
    gw = await make_gateway()
    status, body = await _create(gw, {"name": "app", "scopes": ["admin"], "priority": "high", "weight": 7})
    assert status == 201, body
    token = body["token"]
    assert token.startswith("gw_") and body["priority"] == "high" and body["weight"] == 7
    assert body["expires_at"] is None and body["last_used_at"] is None
    listed = await (await gw.client.get("/v1/tokens", headers=gw.auth())).text()
    shown = await (await gw.client.get("/v1/tokens/app", headers=gw.auth(token))).json()
    assert token not in listed and "token_hash" not in listed and "token" not in shown
    assert {"name": "app", "scopes": ["admin"], "only": None, "priority": "high", "weight": 7}.items() <= shown.items()
    assert shown["last_used_at"] is not None  # the read above was made with this very token
    names = [t["name"] for t in (await (await gw.client.get("/v1/tokens", headers=gw.auth())).json())["data"]]
    assert names == ["admin", "app"]


async def test_defaults_are_normal_priority_weight_one(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    status, body = await _create(gw, {"name": "plain", "scopes": ["proxy"], "only": ["sync:sync-1"]})
    assert status == 201 and body["priority"] == "normal" and body["weight"] == 1 and body["only"] == ["sync:sync-1"]


async def test_principal_carries_priority_and_weight(make_gateway: GatewayFactory) -> None:
    """What the auth middleware attaches to a request is what the token was created with."""
    gw = await make_gateway()
    _, body = await _create(gw, {"name": "bulk", "scopes": ["proxy"], "priority": "low", "weight": 3})
    principal = await gw.app[appkeys.TOKENS].authenticate(body["token"])
    assert principal is not None and (principal.priority, principal.weight) == ("low", 3)


async def test_revoked_token_is_refused(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    _, body = await _create(gw, {"name": "gone", "scopes": ["admin"]})
    assert (await gw.client.get("/v1/tokens", headers=gw.auth(body["token"]))).status == 200
    assert (await gw.client.delete("/v1/tokens/gone", headers=gw.auth())).status == 204
    resp = await gw.client.get("/v1/tokens", headers=gw.auth(body["token"]))
    assert resp.status == 401 and (await resp.json())["code"] == "unauthorized"
    assert (await gw.client.delete("/v1/tokens/gone", headers=gw.auth())).status == 404
    assert (await gw.client.get("/v1/tokens/gone", headers=gw.auth())).status == 404


async def test_expired_token_is_refused_like_a_revoked_one(make_gateway: GatewayFactory) -> None:
    """A token works until its ``expires_at``, then gets the same 401 as a revoked token."""
    gw = await make_gateway(server={"token_cache_ttl": 60})
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    status, body = await _create(gw, {"name": "brief", "scopes": ["admin"], "expires_at": expires.isoformat()})
    assert status == 201 and datetime.fromisoformat(body["expires_at"]) == expires
    assert (await gw.client.get("/v1/tokens", headers=gw.auth(body["token"]))).status == 200  # now cached
    deadline = time.monotonic() + 15
    while (resp := await gw.client.get("/v1/tokens", headers=gw.auth(body["token"]))).status == 200:
        assert time.monotonic() < deadline, "the expired token still works"
        await asyncio.sleep(0.05)
    assert resp.status == 401 and datetime.now(UTC) >= expires
    assert (await resp.json())["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"weight": 0}, "weight"),
        ({"weight": 1001}, "weight"),
        ({"weight": "5"}, "weight"),
        ({"weight": 2.5}, "weight"),
        ({"priority": "urgent"}, "priority"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2999-01-01T00:00:00"}, "expires_at"),  # no timezone: ambiguous
        ({"scopes": []}, "scopes"),
        ({"scopes": ["root"]}, "scopes.0"),
        ({"name": "bad name"}, "name"),
        ({"secret": "x"}, "secret"),
    ],
)
async def test_bad_fields_are_400_naming_the_field(
    make_gateway: GatewayFactory, change: dict[str, Any], field: str
) -> None:
    gw = await make_gateway()
    status, body = await _create(gw, {"name": "t", "scopes": ["proxy"], **change})
    assert status == 400 and body["code"] == "invalid_request"
    assert body["error"].startswith("invalid token: " + field + ":") or f"; {field}:" in body["error"], body
    assert (await gw.client.get("/v1/tokens/t", headers=gw.auth())).status == 404


async def test_duplicate_name_is_409(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    assert (await _create(gw, {"name": "dup", "scopes": ["proxy"]}))[0] == 201
    status, body = await _create(gw, {"name": "dup", "scopes": ["proxy"]})
    assert status == 409 and body["code"] == "conflict"


async def test_token_api_needs_the_admin_scope(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    proxy = await gw.token("proxy-app", ["proxy"])
    for method, path in [("GET", "/v1/tokens"), ("GET", "/v1/tokens/admin"), ("DELETE", "/v1/tokens/admin")]:
        assert (await gw.client.request(method, path, headers=gw.auth(proxy))).status == 403
    resp = await gw.client.post("/v1/tokens", json={"name": "x", "scopes": ["admin"]}, headers=gw.auth(proxy))
    assert resp.status == 403
    assert (await gw.client.get("/v1/tokens")).status == 401


async def test_openapi_documents_the_token_api(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    doc = await (await gw.client.get("/v1/openapi.json", headers=gw.auth())).json()
    assert set(doc["paths"]["/v1/tokens"]) == {"get", "post"}
    assert set(doc["paths"]["/v1/tokens/{name}"]) == {"get", "delete"}
    created = doc["paths"]["/v1/tokens"]["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert created == {"$ref": "#/components/schemas/TokenCreated"}
    fields = doc["components"]["schemas"]["TokenIn"]["properties"]
    assert fields["weight"]["minimum"] == 1 and fields["weight"]["maximum"] == 1000
    assert fields["priority"]["enum"] == ["high", "normal", "low"]
    assert {"expires_at", "last_used_at", "priority", "weight"} <= set(
        doc["components"]["schemas"]["TokenView"]["properties"]
    )


async def test_a_token_revoked_before_the_answer_is_still_answered_201(make_gateway: GatewayFactory) -> None:
    """The create answers from the row it wrote: a store trigger deletes the token as soon as it is
    inserted (a revoke landing between the insert and a read-back), and the answer is still the 201."""
    gw = await make_gateway()
    engine = gw.app[appkeys.ENGINE]
    if engine.dialect.name == "postgresql":
        create = [
            "CREATE FUNCTION revoke_doomed() RETURNS trigger AS $$ BEGIN "
            "DELETE FROM api_tokens WHERE name = NEW.name; RETURN NULL; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER revoke_doomed AFTER INSERT ON api_tokens FOR EACH ROW WHEN (NEW.name = 'doomed') "
            "EXECUTE FUNCTION revoke_doomed()",
        ]
        drop = ["DROP TRIGGER revoke_doomed ON api_tokens", "DROP FUNCTION revoke_doomed()"]
    else:
        create = [
            "CREATE TRIGGER revoke_doomed AFTER INSERT ON api_tokens WHEN NEW.name = 'doomed' "
            "BEGIN DELETE FROM api_tokens WHERE name = NEW.name; END"
        ]
        drop = ["DROP TRIGGER revoke_doomed"]
    async with engine.begin() as conn:
        for statement in create:
            await conn.execute(text(statement))
    try:
        status, body = await _create(gw, {"name": "doomed", "scopes": ["proxy"], "weight": 4})
    finally:  # the PostgreSQL database is shared by the whole run
        async with engine.begin() as conn:
            for statement in drop:
                await conn.execute(text(statement))
    assert status == 201, body
    assert body["token"].startswith("gw_") and (body["name"], body["scopes"], body["weight"]) == (
        "doomed",
        ["proxy"],
        4,
    )
    assert (await gw.client.get("/v1/tokens/doomed", headers=gw.auth())).status == 404
