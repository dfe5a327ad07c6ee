"""Management API: CRUD of credentials, syncs and consumers; auth; secrets write-only; bad input."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text, update

from gateway.app import create_app
from gateway.config import StoreConfig
from gateway.domain.models import TokenIn
from gateway.http import appkeys
from gateway.store import tables as t
from gateway.store.db import create_engine, utcnow
from gateway.vault.crypto import Keyring
from tests.conftest import Gateway, GatewayFactory, ServedLikeProduction, make_config

STRIPE = {
    "id": "credential-stripe",
    "provider": "stripe",
    "base_url": "https://api.stripe.com",
    "auth": {"type": "basic", "username": "sk_test_supersecret123", "password": ""},
    "rate_limit": {"rate": 100, "per": 1},
}


async def test_credential_round_trip_masks_every_secret(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    resp = await gw.client.post("/v1/credentials", json=STRIPE, headers=gw.auth())
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["auth"] == {"type": "basic", "username": "***", "password": "***"}
    listed = await (await gw.client.get("/v1/credentials", headers=gw.auth())).text()
    assert "sk_test_supersecret123" not in listed
    got = await (await gw.client.get("/v1/credentials/credential-stripe", headers=gw.auth())).json()
    assert got["base_url"] == "https://api.stripe.com"
    assert got["rate_limit"]["rate"] == 100 and got["rate_limit"]["per"] == 1


async def test_generated_ids_follow_the_spec_shape(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    body = {k: v for k, v in STRIPE.items() if k != "id"}
    created = await (await gw.client.post("/v1/credentials", json=body, headers=gw.auth())).json()
    assert created["id"].startswith("credential-") and len(created["id"]) == len("credential-") + 12


async def test_deleting_a_credential_used_by_a_sync_is_409(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    await gw.client.post("/v1/credentials", json=STRIPE, headers=gw.auth())
    sync = {"id": "my-sync", "credential_id": "credential-stripe", "collections": ["stripe:customer"]}
    assert (await gw.client.post("/v1/syncs", json=sync, headers=gw.auth())).status == 201
    resp = await gw.client.delete("/v1/credentials/credential-stripe", headers=gw.auth())
    assert resp.status == 409
    assert (await resp.json())["code"] == "conflict"
    assert (await gw.client.delete("/v1/syncs/my-sync", headers=gw.auth())).status == 204
    assert (await gw.client.delete("/v1/credentials/credential-stripe", headers=gw.auth())).status == 204


async def test_deleting_a_sync_a_consumer_reads_is_409(make_gateway: GatewayFactory) -> None:
    """A consumer bound to a deleted sync would receive nothing again, silently: refused, naming it."""
    gw = await make_gateway()
    await gw.client.post("/v1/credentials", json=STRIPE, headers=gw.auth())
    sync = {"id": "my-sync", "credential_id": "credential-stripe", "collections": ["stripe:customer"]}
    assert (await gw.client.post("/v1/syncs", json=sync, headers=gw.auth())).status == 201
    consumer = {"id": "reader", "kind": "pull", "sync_id": "my-sync"}
    assert (await gw.client.post("/v1/consumers", json=consumer, headers=gw.auth())).status == 201
    resp = await gw.client.delete("/v1/syncs/my-sync", headers=gw.auth())
    assert resp.status == 409
    answer = await resp.json()
    assert answer["code"] == "conflict" and "reader" in answer["error"]
    assert (await gw.client.get("/v1/syncs/my-sync", headers=gw.auth())).status == 200
    assert (await gw.client.delete("/v1/consumers/reader", headers=gw.auth())).status == 204
    assert (await gw.client.delete("/v1/syncs/my-sync", headers=gw.auth())).status == 204


async def test_sync_collections_must_match_the_credential_provider(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    await gw.client.post("/v1/credentials", json=STRIPE, headers=gw.auth())
    sync = {"id": "s1", "credential_id": "credential-stripe", "collections": ["salesforce:contact"]}
    resp = await gw.client.post("/v1/syncs", json=sync, headers=gw.auth())
    assert resp.status == 400
    assert "collections" in (await resp.json())["error"]


async def test_consumer_secrets_are_write_only(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    hook = {
        "id": "hooks",
        "kind": "webhook",
        "url": "https://example.com/hook",
        "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    }
    created = await (await gw.client.post("/v1/consumers", json=hook, headers=gw.auth())).json()
    assert created["secret"] == "***"
    mirror = {"id": "mirror", "kind": "postgres", "dsn": "postgresql://app:hunter2hunter2@db/app"}
    created = await (await gw.client.post("/v1/consumers", json=mirror, headers=gw.auth())).json()
    assert created["dsn"] == "postgresql://app:***@db/app"
    patched = await gw.client.patch("/v1/consumers/hooks", json={"batch_size": 5}, headers=gw.auth())
    assert patched.status == 200, await patched.text()
    assert (await patched.json())["batch_size"] == 5


async def test_a_consumer_patched_onto_an_unknown_sync_is_404_as_on_create(make_gateway: GatewayFactory) -> None:
    """PATCH is checked like a create of the merged object: it stored a sync_id no sync has."""
    gw = await make_gateway()
    for method, path, body in (
        ("POST", "/v1/consumers", {"id": "reader", "kind": "pull", "sync_id": "no-such-sync"}),
        ("POST", "/v1/consumers", {"id": "reader", "kind": "pull"}),
        ("PATCH", "/v1/consumers/reader", {"sync_id": "no-such-sync"}),
    ):
        resp = await gw.client.request(method, path, json=body, headers=gw.auth())
        assert resp.status == (201 if body.get("sync_id") is None else 404), await resp.text()
    stored = await (await gw.client.get("/v1/consumers/reader", headers=gw.auth())).json()
    assert stored["sync_id"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**STRIPE, "provider": "nope"}, "provider"),
        ({**STRIPE, "base_url": "ftp://x"}, "base_url"),
        ({**STRIPE, "auth": {"type": "bearer"}}, "auth.bearer.token"),
        ({**STRIPE, "id": "bad id!"}, "id"),
        ({**STRIPE, "surprise": 1}, "surprise"),
        ({**STRIPE, "rate_limit": {"rate": 0}}, "rate_limit.rate"),
        ({**STRIPE, "rate_limit": {"rate": 5, "burst": 0}}, "rate_limit.burst"),
        ({**STRIPE, "rate_limit": {"max_wait": -1}}, "rate_limit.max_wait"),
    ],
)
async def test_bad_credential_bodies_name_the_field(
    make_gateway: GatewayFactory, body: dict[str, Any], field: str
) -> None:
    gw = await make_gateway()
    resp = await gw.client.post("/v1/credentials", json=body, headers=gw.auth())
    assert resp.status == 400
    error = await resp.json()
    assert error["code"] == "invalid_request"
    assert field in error["error"]
    assert "sk_test_supersecret123" not in await resp.text()


HOOK = {"id": "hook", "kind": "webhook", "url": "https://example.com/hook", "secret": "whsec_" + "A" * 20}
# Every numeric field of a credential or consumer, given as a numeric string or a boolean (lax pydantic
# read "5" as 5 and true as 1): (method, path, body, the field named).
NOT_NUMBERS = [
    ("POST", "/v1/credentials", {**STRIPE, "rate_limit": {"rate": "5", "per": 1}}, "rate_limit.rate"),
    ("POST", "/v1/credentials", {**STRIPE, "rate_limit": {"rate": 5, "per": True}}, "rate_limit.per"),
    ("POST", "/v1/credentials", {**STRIPE, "rate_limit": {"rate": 5, "per": 1, "burst": "5"}}, "rate_limit.burst"),
    ("POST", "/v1/credentials", {**STRIPE, "rate_limit": {"max_wait": "1.5"}}, "rate_limit.max_wait"),
    ("POST", "/v1/credentials", {**STRIPE, "rate_limit": {"max_concurrency": True}}, "rate_limit.max_concurrency"),
    ("POST", "/v1/credentials", {**STRIPE, "rate_limit": {"windows": [{"rate": 1, "per": "60"}]}},
     "rate_limit.windows.0.per"),
    ("POST", "/v1/credentials", {**STRIPE, "rate_limit": {"rules": [{"match": {"path": "/a"}, "cost": "2"}]}},
     "rate_limit.rules.0.cost"),
    ("POST", "/v1/credentials", {**STRIPE, "timeouts": {"connect": "10"}}, "timeouts.connect"),
    ("PATCH", "/v1/credentials/credential-stripe", {"timeouts": {"total": False}}, "timeouts.total"),
    ("PATCH", "/v1/credentials/credential-stripe", {"rate_limit": {"rate": "1e3", "per": 1}}, "rate_limit.rate"),
    ("POST", "/v1/consumers", {"id": "pull", "kind": "pull", "visibility_timeout": "30"}, "pull.visibility_timeout"),
    ("POST", "/v1/consumers", {**HOOK, "batch_size": "10"}, "webhook.batch_size"),
    ("POST", "/v1/consumers", {**HOOK, "max_retry_duration": True}, "webhook.max_retry_duration"),
    ("PATCH", "/v1/consumers/hook", {"timeout": "5"}, "timeout"),
    ("PATCH", "/v1/consumers/hook", {"max_backoff": True}, "max_backoff"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "field"), NOT_NUMBERS)
async def test_a_number_given_as_a_string_or_a_boolean_is_400_naming_the_field(
    make_gateway: GatewayFactory, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    gw = await make_gateway()
    for where, made in (("/v1/credentials", STRIPE), ("/v1/consumers", HOOK)):
        assert (await gw.client.post(where, json=made, headers=gw.auth())).status == 201
    before = [await (await gw.client.get(f"{where}/{made['id']}", headers=gw.auth())).json() for where, made in
              (("/v1/credentials", STRIPE), ("/v1/consumers", HOOK))]  # fmt: skip
    resp = await gw.client.request(method, path, json={**body, "id": "new"} if method == "POST" else body,
                                   headers=gw.auth())  # fmt: skip
    assert resp.status == 400, await resp.text()
    error = await resp.json()
    assert (error["code"], error["fields"]) == ("invalid_request", [field])
    assert f"{field}: must be a JSON number" in error["error"]
    after = [await (await gw.client.get(f"{where}/{made['id']}", headers=gw.auth())).json() for where, made in
             (("/v1/credentials", STRIPE), ("/v1/consumers", HOOK))]  # fmt: skip
    assert after == before  # nothing written


async def test_numbers_stored_by_an_older_version_still_load(make_gateway: GatewayFactory) -> None:
    """Older versions stored what they validated, so numbers (ints in float fields, floats such as 5.0 in
    int fields): those load and are shown as before."""
    gw = await make_gateway()
    assert (await gw.client.post("/v1/credentials", json=STRIPE, headers=gw.auth())).status == 201
    stored = {"rate_limit": {"rate": 5, "per": 1.0, "burst": 5.0, "max_concurrency": 2.0}, "timeouts": {"total": 0}}
    async with gw.app[appkeys.ENGINE].begin() as conn:
        await conn.execute(update(t.credentials).where(t.credentials.c.id == STRIPE["id"]).values(stored))
    for path in ("/v1/credentials/credential-stripe", "/v1/credentials"):
        assert (await gw.client.get(path, headers=gw.auth())).status == 200
    shown = await (await gw.client.get("/v1/credentials/credential-stripe", headers=gw.auth())).json()
    assert {k: v for k, v in shown["rate_limit"].items() if v is not None} == {
        "rate": 5, "per": 1, "burst": 5, "max_concurrency": 2}  # fmt: skip
    assert shown["timeouts"]["total"] == 0


async def test_malformed_json_and_empty_bodies_are_400(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    for data in (b"{not json", b"", b"[1,2"):
        resp = await gw.client.post("/v1/credentials", data=data, headers=gw.auth())
        assert resp.status == 400
        assert (await resp.json())["code"] == "invalid_request"


async def test_oversized_json_body_is_413(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(server={"max_json_bytes": 2048})
    resp = await gw.client.post("/v1/credentials", data=b"{" + b" " * 5000 + b"}", headers=gw.auth())
    assert resp.status == 413
    assert (await resp.json())["code"] == "payload_too_large"


async def test_unknown_ids_are_404_and_bad_ids_400(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    resp = await gw.client.get("/v1/syncs/nope", headers=gw.auth())
    assert resp.status == 404 and (await resp.json())["code"] == "not_found"
    resp = await gw.client.get("/v1/consumers/-bad", headers=gw.auth())
    assert resp.status == 400


async def test_tokens_need_the_admin_scope(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    proxy_only = await gw.token("p", ["proxy"])
    assert (await gw.client.get("/v1/credentials")).status == 401
    assert (await gw.client.get("/v1/credentials", headers=gw.auth("gw_wrong"))).status == 401
    resp = await gw.client.get("/v1/credentials", headers=gw.auth(proxy_only))
    assert resp.status == 403
    assert (await resp.json())["code"] == "forbidden"


async def test_every_response_carries_a_request_id(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    resp = await gw.client.get("/v1/credentials", headers={**gw.auth(), "x-request-id": "abc-123"})
    assert resp.headers["x-request-id"] == "abc-123"
    resp = await gw.client.get("/v1/nowhere", headers={**gw.auth(), "x-request-id": "bad id\u00e9"})
    assert resp.status == 404
    assert resp.headers["x-request-id"] != "bad id\u00e9" and len(resp.headers["x-request-id"]) == 32


async def test_openapi_document_is_generated_from_models(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    doc = await (await gw.client.get("/v1/openapi.json", headers=gw.auth())).json()
    assert doc["openapi"].startswith("3.1")
    assert "/v1/credentials/{id}" in doc["paths"]
    schema = doc["components"]["schemas"]["CredentialIn"]
    assert "provider" in schema["required"]
    assert set(doc["paths"]["/v1/credentials"]["post"]["responses"]) >= {"201", "400", "409"}
    deletion = doc["paths"]["/v1/consumers/{id}"]["delete"]
    assert "204" in deletion["responses"] and "200" not in deletion["responses"]
    assert "content" not in deletion["responses"]["204"]
    assert deletion["parameters"][0]["schema"]["pattern"].startswith("^[A-Za-z0-9]")
    assert schema["properties"]["base_url"]["pattern"].startswith("^https?://")  # what the validator checks
    collection = doc["components"]["schemas"]["SyncIn"]["properties"]["collections"]["items"]
    assert collection["pattern"] == "^[a-z][a-z0-9_]{0,63}:.+$"  # a provider key, then the object


async def test_a_method_a_path_does_not_serve_gets_405_with_allow(make_gateway: GatewayFactory) -> None:
    """An unsupported method on a known path: the JSON 405 and an Allow header naming the methods there."""
    gw = await make_gateway()
    resp = await gw.client.request("TRACE", "/v1/syncs/some-sync", headers=gw.auth())
    assert resp.status == 405
    assert (await resp.json())["code"] == "method_not_allowed"
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD", "PATCH", "DELETE"}


async def test_every_get_endpoint_answers_head_with_the_same_status_and_scope(make_gateway: GatewayFactory) -> None:
    """HEAD was 405 on the management API (RFC 9110: wherever GET is, HEAD is): monitors probing with it
    saw an error. It answers GET's status and headers, no body, behind the same scope."""
    gw = await make_gateway()
    assert (await gw.client.post("/v1/credentials", json=STRIPE, headers=gw.auth())).status == 201
    proxy_only = await gw.token("p", ["proxy"])
    for path in ("/v1/credentials", "/v1/credentials/credential-stripe", "/v1/tokens/admin", "/v1/openapi.json"):
        got = await gw.client.get(path, headers=gw.auth())
        head = await gw.client.head(path, headers=gw.auth())
        assert (
            (head.status, head.headers["Content-Type"])
            == (got.status, got.headers["Content-Type"])
            == (
                200,
                "application/json; charset=utf-8",
            )
        ), path
        assert await head.read() == b""
    assert (await gw.client.head("/v1/credentials/none", headers=gw.auth())).status == 404
    assert (await gw.client.head("/v1/tokens", headers=gw.auth(proxy_only))).status == 403
    assert (await gw.client.head("/v1/tokens")).status == 401


def _documented_consumers() -> list[dict[str, Any]]:
    """The consumer bodies docs/api.md shows under "Object shapes" (one JSON object per line)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith('{"id"') and line.endswith("}")]
    return [body for body in map(json.loads, lines) if "kind" in body]


async def test_consumers_read_back_in_the_shape_they_were_written(make_gateway: GatewayFactory) -> None:
    """Each documented consumer body, POSTed as it is, reads back with the same top-level fields and
    values (secrets masked), plus its state: the shape you write is the shape you read."""
    gw = await make_gateway()
    await gw.client.post("/v1/credentials", json=STRIPE, headers=gw.auth())
    sync = {"id": "my-sync-id", "credential_id": "credential-stripe"}
    assert (await gw.client.post("/v1/syncs", json=sync, headers=gw.auth())).status == 201
    documented = _documented_consumers()
    assert sorted(b["kind"] for b in documented) == ["postgres", "pull", "webhook"]
    masked = {"secret": "***", "dsn": "postgresql://app:***@db/app"}
    for body in documented:
        assert (await gw.client.post("/v1/consumers", json=body, headers=gw.auth())).status == 201
        read = await (await gw.client.get(f"/v1/consumers/{body['id']}", headers=gw.auth())).json()
        assert {k: read[k] for k in body} == {k: masked.get(k, v) for k, v in body.items()}
        assert {"position", "pending", "status"} <= set(read) and "settings" not in read


async def _racing(
    pg_url: str, keyring: Keyring, aiohttp_client: Any, held: list[Any], method: str, path: str, body: Any = None
) -> Any:
    """Run the ``held`` statements in a transaction left open, send the request, wait until it waits on a
    lock they took (past the request's own checks), commit, and answer the request's response.
    PostgreSQL only: a deterministic stand-in for a concurrent change landing between a check and a write."""
    app = create_app(make_config(pg_url, keyring), keyring=keyring, ops_on_main=True)
    gw = Gateway(await aiohttp_client(ServedLikeProduction(app)), "")
    gw.admin_token = await app[appkeys.TOKENS].create(TokenIn(name="admin", scopes=["admin"]))
    assert (await gw.client.post("/v1/credentials", json=STRIPE, headers=gw.auth())).status == 201
    sync = {"id": "sync", "credential_id": "credential-stripe"}
    assert (await gw.client.post("/v1/syncs", json=sync, headers=gw.auth())).status == 201
    other = {**STRIPE, "id": "other"}
    assert (await gw.client.post("/v1/credentials", json=other, headers=gw.auth())).status == 201
    everything = {"id": "everything", "kind": "pull"}  # a consumer of every sync
    assert (await gw.client.post("/v1/consumers", json=everything, headers=gw.auth())).status == 201
    engine = create_engine(StoreConfig(url=pg_url))
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            for statement in held:
                await conn.execute(statement)
            sent = asyncio.ensure_future(gw.client.request(method, path, json=body, headers=gw.auth()))
            deadline = asyncio.get_running_loop().time() + 10
            async with engine.connect() as watcher:
                while not (await watcher.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))).scalar():
                    assert asyncio.get_running_loop().time() < deadline, "the request never waited on the lock"
                    await asyncio.sleep(0.02)
            await transaction.commit()
        return await sent
    finally:
        await engine.dispose()


async def test_deleting_a_credential_while_a_sync_of_it_commits_is_409(
    pg_url: str, keyring: Keyring, aiohttp_client: Any
) -> None:
    """The delete checks for syncs, then deletes: a sync created in between made the foreign key refuse
    the delete, a 500."""
    now = utcnow()
    row = {"id": "late", "credential_id": "other", "collections": [], "options": {}}
    held = insert(t.syncs).values(**row, created_at=now, updated_at=now)
    resp = await _racing(pg_url, keyring, aiohttp_client, [held], "DELETE", "/v1/credentials/other")
    assert resp.status == 409, await resp.text()
    assert (await resp.json())["code"] == "conflict"


async def test_re_pointing_a_sync_at_a_credential_being_deleted_is_404(
    pg_url: str, keyring: Keyring, aiohttp_client: Any
) -> None:
    """The PATCH checks the credential, then updates: a delete of it in between made the foreign key
    refuse the update, a 500; now the same 404 as when the delete came first."""
    held = delete(t.credentials).where(t.credentials.c.id == "other")
    body = {"credential_id": "other"}
    resp = await _racing(pg_url, keyring, aiohttp_client, [held], "PATCH", "/v1/syncs/sync", body)
    assert resp.status == 404, await resp.text()
    assert (await resp.json())["field"] == "credential_id"


async def test_creating_a_sync_of_a_credential_being_deleted_is_404(
    pg_url: str, keyring: Keyring, aiohttp_client: Any
) -> None:
    """The create checks the credential, then inserts: a delete of it in between made the foreign key
    refuse the insert, which answered 409 "sync 'new' already exists"; now the 404 naming credential_id."""
    held = delete(t.credentials).where(t.credentials.c.id == "other")
    body = {"id": "new", "credential_id": "other"}
    resp = await _racing(pg_url, keyring, aiohttp_client, [held], "POST", "/v1/syncs", body)
    assert resp.status == 404, await resp.text()
    assert (await resp.json())["field"] == "credential_id"


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_a_consumer_bound_to_a_sync_being_deleted_is_404(
    pg_url: str, keyring: Keyring, aiohttp_client: Any, method: str
) -> None:
    """The consumer checked the sync, then wrote: a delete of the sync in between left the consumer bound
    to a sync that was gone (201, receiving nothing ever), 30 of 30 concurrent pairs on SQLite."""
    held = [delete(t.syncs).where(t.syncs.c.id == "sync")]
    path, body = "/v1/consumers", {"id": "pull", "kind": "pull", "sync_id": "sync"}
    if method == "PATCH":
        path, body = "/v1/consumers/everything", {"sync_id": "sync"}
    resp = await _racing(pg_url, keyring, aiohttp_client, held, method, path, body)
    assert resp.status == 404, await resp.text()
    assert (await resp.json())["field"] == "sync_id"


async def test_deleting_a_sync_while_a_consumer_of_it_commits_is_409(
    pg_url: str, keyring: Keyring, aiohttp_client: Any
) -> None:
    """The delete checked for readers, then deleted: a consumer created in between (holding the sync as
    the create now does) was left bound to nothing."""
    now = utcnow()
    row = {"id": "pull", "kind": "pull", "sync_id": "sync", "settings": {}, "position": 0, "status": "active"}
    held = [
        insert(t.consumers).values(**row, created_at=now, updated_at=now),
        select(t.syncs.c.id).where(t.syncs.c.id == "sync").with_for_update(read=True),
    ]
    resp = await _racing(pg_url, keyring, aiohttp_client, held, "DELETE", "/v1/syncs/sync")
    assert resp.status == 409, await resp.text()
    assert (await resp.json())["consumers"] == ["pull"]
