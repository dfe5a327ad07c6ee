"""Every console page, fetched over HTTP like Datasette's tests do: what it shows and what it never shows."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from html import unescape as html_unescape
from typing import Any

import pytest
from sqlalchemy import update

from gateway.http import appkeys
from gateway.store import tables as t
from tests.conftest import Gateway, GatewayFactory
from tests.console.helpers import sign_in
from tests.upstream.helpers import Upstream, add_credential, add_sync, start_upstream

SignedIn = tuple[Gateway, str]


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    return await start_upstream(aiohttp_server)


@pytest.fixture
async def signed_in(make_gateway: GatewayFactory) -> SignedIn:
    gw = await make_gateway()
    return gw, await sign_in(gw.client, gw.admin_token)


async def test_overview_lists_every_credential_with_its_bucket(signed_in: SignedIn, upstream: Upstream) -> None:
    """Each credential has a row with its provider, limit and live bucket fields, and no secret."""
    gw, _ = signed_in
    await add_credential(gw, upstream.url, cid="cred-a", provider="stripe")
    await add_credential(gw, upstream.url, cid="cred-b")
    html = await (await gw.client.get("/console")).text()
    for cid, provider in (("cred-a", "stripe"), ("cred-b", "rest")):
        assert f'<tr data-credential="{cid}">' in html
        assert f"<td>{provider}</td>" in html
    assert 'data-field="queue_depth">0<' in html and "10000" in html  # the test credentials' rate
    assert "upstream-secret-token" not in html


async def test_unknown_credential_is_a_404_page(signed_in: SignedIn) -> None:
    """The API's not-found message, as an HTML page with the console's headers."""
    gw, _ = signed_in
    resp = await gw.client.get("/console/credentials/nope")
    assert resp.status == 404 and resp.content_type == "text/html"
    assert "credential &#39;nope&#39; not found" in await resp.text()
    assert "Content-Security-Policy" in resp.headers


async def test_recent_calls_keep_no_query_string_and_filter(signed_in: SignedIn, upstream: Upstream) -> None:
    """Proxied calls appear with their path but never their query; status, token and credential filter them."""
    gw, _ = signed_in
    await add_sync(gw, await add_credential(gw, upstream.url + "/echo"))
    app_token = await gw.token("app", ["proxy"])
    assert (await gw.client.get("/v1/proxy/sync/sync-1/a?api_key=hunter2", headers=gw.auth(app_token))).status == 200
    assert (await gw.client.get("/v1/proxy/credential/nope/b", headers=gw.auth())).status == 404
    html = await (await gw.client.get("/console/calls")).text()
    assert "/v1/proxy/sync/sync-1/a" in html and "hunter2" not in html and "api_key" not in html
    only_404 = await (await gw.client.get("/console/calls?status=4xx")).text()
    assert "/v1/proxy/credential/nope/b" in only_404 and "/v1/proxy/sync/sync-1/a" not in only_404
    by_token = await (await gw.client.get("/console/calls?token=app&credential=cred-1")).text()
    assert "/v1/proxy/sync/sync-1/a" in by_token and "/nope/b" not in by_token
    assert "/v1/proxy/sync/sync-1/a" in await (await gw.client.get("/console/credentials/cred-1")).text()


async def test_a_created_token_is_shown_once_and_has_the_forms_fields(signed_in: SignedIn) -> None:
    """The create form goes through the token API's model: its fields land, the secret is shown once."""
    gw, csrf = signed_in
    form = {
        "csrf": csrf,
        "name": "ci",
        "scopes": ["proxy", "mutations"],
        "only": "sync:sync-1, credential:cred-1",
        "priority": "low",
        "weight": "3",
        "expires_days": "2",
    }
    resp = await gw.client.post("/console/tokens", data=form)
    assert resp.status == 200
    html = await resp.text()
    secret = html.split('<output id="new-token" class="secret">')[1].split("<")[0]
    assert secret.startswith("gw_")
    view = await (await gw.client.get("/v1/tokens/ci", headers=gw.auth())).json()
    assert (view["scopes"], view["only"], view["priority"], view["weight"]) == (
        ["proxy", "mutations"],
        ["sync:sync-1", "credential:cred-1"],
        "low",
        3,
    )
    assert datetime.fromisoformat(view["expires_at"]) > datetime.now(UTC) + timedelta(days=1)
    assert secret not in await (await gw.client.get("/console/tokens")).text()


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("name", "bad name!", "name"),
        ("weight", "0", "weight"),
        ("expires_days", "soon", "expires_days"),
        ("only", "sync:a, billing", "only.1"),
        ("weight", "\u00b2", "weight"),  # a digit to str.isdigit(), not to int()
        ("weight", "9" * 5000, "weight"),  # past int()'s 4,300-digit limit
    ],
)
async def test_a_bad_token_form_names_the_field(signed_in: SignedIn, field: str, value: str, named: str) -> None:
    """A refused form answers 400 on the page, naming the field, and creates nothing."""
    gw, csrf = signed_in
    form = {"csrf": csrf, "name": "ok", "scopes": "proxy", field: value}
    resp = await gw.client.post("/console/tokens", data=form)
    assert resp.status == 400
    assert named in await resp.text()
    assert [v.name for v in await gw.app[appkeys.TOKENS].list()] == ["admin"]


async def test_a_session_of_an_expired_admin_token_stops_working(signed_in: SignedIn) -> None:
    """An expired token is refused like a revoked one, and so are the sessions it opened."""
    gw, _ = signed_in
    past = datetime.now(UTC) - timedelta(seconds=1)
    async with gw.app[appkeys.ENGINE].begin() as conn:
        await conn.execute(update(t.api_tokens).where(t.api_tokens.c.name == "admin").values(expires_at=past))
    assert (await gw.client.get("/console", allow_redirects=False)).status == 303


async def test_consumers_show_position_pending_and_last_error(signed_in: SignedIn) -> None:
    """A failing consumer shows its state and the error its worker recorded."""
    gw, _ = signed_in
    body = {"id": "hooks", "kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "whsec_" + "A" * 24}
    assert (await gw.client.post("/v1/consumers", json=body, headers=gw.auth())).status == 201
    await gw.app[appkeys.OBJECTS].set_consumer_status("hooks", "failing", "delivery failing: answered HTTP 500")
    html = await (await gw.client.get("/console/consumers")).text()
    assert "hooks" in html and "failing" in html and "answered HTTP 500" in html
    assert "whsec_AAAA" not in html


async def test_syncs_and_providers_pages(signed_in: SignedIn, upstream: Upstream) -> None:
    """Syncs show their credential and state as the API gives it; providers show the catalog."""
    gw, _ = signed_in
    await add_sync(gw, await add_credential(gw, upstream.url))
    syncs = await (await gw.client.get("/console/syncs")).text()
    assert "sync-1" in syncs and "/console/credentials/cred-1" in syncs
    assert '<span class="badge idle">idle</span>' in syncs  # the API's state of a proxy-only sync
    providers = await (await gw.client.get("/console/providers")).text()
    for name in ("salesforce", "hubspot", "stripe", "airtable", "rest", "github", "openai"):
        assert f'<th scope="row">{name}</th>' in providers


async def test_the_credential_chart_has_a_line_per_catalog_window_and_rule(
    signed_in: SignedIn, upstream: Upstream
) -> None:
    """With no override of them, the lines are the catalog's: HubSpot's daily window and search rule."""
    gw, _ = signed_in
    await add_credential(gw, upstream.url, cid="cred-h", provider="hubspot", rate_limit={"rate": 10, "per": 1})
    html = await (await gw.client.get("/console/credentials/cred-h")).text()
    lines = json.loads(html_unescape(html.split('data-lines="')[1].split('"')[0]))
    assert [(line["kind"], line["label"]) for line in lines] == [
        ("limit", "limit: 10 per second (10/s)"),
        ("window", "window 1: 250000 per day (2.89/s)"),
        ("rule", "rule 1 (POST /crm/v3/objects/*/search): 4 per second (4/s)"),
    ]
    assert '<span class="key limit rule" data-line>rule 1 (POST /crm/v3/objects/*/search)' in html


async def test_the_sync_buttons_pause_resume_and_backfill(make_gateway: GatewayFactory, upstream: Upstream) -> None:
    """Each button is one form post that does what the sync API does; the page then shows the new state."""
    gw = await make_gateway(stream={"capture": False})  # the store's state only: no poller changes it
    csrf = await sign_in(gw.client, gw.admin_token)
    auth = {"type": "bearer", "token": "pat-na1-sandbox-token"}
    await add_credential(gw, upstream.url, auth, cid="cred-h", provider="hubspot")
    body = {"id": "contacts", "credential_id": "cred-h", "collections": ["hubspot:contact"]}
    assert (await gw.client.post("/v1/syncs", json=body, headers=gw.auth())).status == 201
    await add_sync(gw, "cred-h", "proxy-only")
    html = await (await gw.client.get("/console/syncs")).text()
    assert 'action="/console/syncs/contacts/pause"' in html and 'action="/console/syncs/contacts/backfill"' in html
    assert "/console/syncs/proxy-only/" not in html  # a proxy-only sync reads nothing: no buttons

    async def press(action: str) -> dict[str, Any]:
        resp = await gw.client.post(f"/console/syncs/contacts/{action}", data={"csrf": csrf}, allow_redirects=False)
        assert (resp.status, resp.headers["Location"]) == (303, "/console/syncs")
        api = await gw.client.get("/v1/syncs/contacts", headers=gw.auth())
        return dict(await api.json())

    assert (await press("pause"))["state"] == "paused"
    html = await (await gw.client.get("/console/syncs")).text()
    assert '<span class="badge paused">paused</span>' in html and 'action="/console/syncs/contacts/resume"' in html
    assert "/console/syncs/contacts/pause" not in html
    assert (await press("resume"))["state"] == "backfilling"
    assert (await gw.app[appkeys.OBJECTS].sync("contacts")).paused is False
    await press("pause")
    view = await press("backfill")  # also resumes
    assert view["state"] == "backfilling" and (await gw.app[appkeys.OBJECTS].sync("contacts")).generation == 1
    missing = await gw.client.post("/console/syncs/nope/pause", data={"csrf": csrf})
    assert missing.status == 404 and "nope" in await missing.text()
    waits = datetime.now(UTC) + timedelta(minutes=5)  # a rate limit refused its last read: shown with the state
    await gw.app[appkeys.OBJECTS].set_sync_throttled("contacts", waits, "backfilling")
    html = await (await gw.client.get("/console/syncs")).text()
    assert f'backfilling</span> <span class="hint">rate limited, reads again {waits:%Y-%m-%d %H:%M} UTC' in html


async def test_the_live_stream_sends_every_credentials_state(signed_in: SignedIn, upstream: Upstream) -> None:
    """``/console/events`` is an event stream whose events carry each credential's bucket."""
    gw, _ = signed_in
    await add_credential(gw, upstream.url)
    async with gw.client.get("/console/events") as resp:
        assert resp.content_type == "text/event-stream"
        assert "unsafe-inline" not in resp.headers["Content-Security-Policy"]
        event = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), timeout=10)
    name, data = event.decode().strip().split("\n")
    assert name == "event: state"
    state = json.loads(data.removeprefix("data: "))["credentials"]["cred-1"]
    assert state["queue_depth"] == 0 and state["limit_per_second"] == 10000


async def test_static_files_are_versioned_and_public(signed_in: SignedIn) -> None:
    """Pages link the stylesheet and script by content hash; both are served to anyone, with the CSP."""
    gw, _ = signed_in
    html = await (await gw.client.get("/console")).text()
    for name, kind in (("console.css", "text/css"), ("console.js", "text/javascript")):
        link = html.split(f"/console/static/{name}?v=")[1].split('"')[0]
        resp = await gw.client.get(f"/console/static/{name}?v={link}", cookies={})
        assert resp.status == 200 and resp.content_type == kind
    assert (await gw.client.get("/console/static/nope.js")).status == 404


async def test_an_open_console_does_not_hold_up_shutdown(signed_in: SignedIn, upstream: Upstream) -> None:
    """Shutdown ends every live stream at once, so a drain never waits for consoles left open."""
    gw, _ = signed_in
    await add_credential(gw, upstream.url)
    resp = await gw.client.get("/console/events")
    await asyncio.wait_for(resp.content.readuntil(b"\n\n"), timeout=10)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(gw.client.server.close(), timeout=20)
    assert asyncio.get_running_loop().time() - started < 5
    assert await asyncio.wait_for(resp.content.read(), timeout=5) == b""  # the stream ended, cleanly


async def test_pages_answer_head_as_get(signed_in: SignedIn) -> None:
    """HEAD was 405 on every console page; now GET's status and headers without a body, behind the same
    session check. The live stream stays GET only (a HEAD of it would never end)."""
    gw, _ = signed_in
    for path in ("/console", "/console/tokens", "/console/credentials/none", "/console/signin"):
        get = await gw.client.get(path, allow_redirects=False)
        head = await gw.client.head(path, allow_redirects=False)
        assert (head.status, head.headers["Content-Type"]) == (get.status, get.headers["Content-Type"]), path
        assert head.headers["Content-Security-Policy"] == get.headers["Content-Security-Policy"]
        assert await head.read() == b""
    assert (await gw.client.head("/console/events")).status == 405
    gw.client.session.cookie_jar.clear()
    resp = await gw.client.head("/console/syncs", allow_redirects=False)
    assert resp.status in (302, 303) and resp.headers["Location"].startswith("/console/signin")
