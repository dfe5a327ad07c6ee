"""Each catalog entry, sent over its limit through the gateway against an upstream answering like it.

The imitator answers with the entry's own throttle status, body, ``Retry-After`` unit and rate-limit
headers (names, ``used/limit`` formats, reset units). Pauses of a minute or a day (Xero's minute
window, Salesforce's exhausted allocation, Airtable's 30 s penalty) are scaled down to the
imitator's one-second window in the gateway's copy of the entry, so the test takes seconds; every
name, unit and status stays the entry's. The guarantee: the upstream refuses at most one call, and
no imitator window ever accepts more than its limit, because the gateway waits for the reset.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from gateway.catalog import Entry, builtin
from gateway.sandbox.imitator import IMITATOR, create_imitator_app, render_reset, render_usage
from tests.conftest import GatewayFactory

LIMIT = 3
CALLS = LIMIT + 3
WINDOW = 1.0


@pytest.fixture
def store_url(tmp_path: Any) -> str:
    """SQLite only: these tests are about the upstream's answers, not the store."""
    return f"sqlite:///{tmp_path / 'gateway.db'}"


def scaled_answers(entry: Entry) -> dict[str, Any]:
    answers = entry.definition.answers.model_dump(exclude_none=True)
    answers["penalty"] = WINDOW
    for signal in answers["headers"]:
        if "window" in signal:
            signal["window"] = WINDOW
    return answers


def auth_for(entry: Entry, token_url: str) -> dict[str, Any]:
    kind = next((a for a in entry.definition.auth if a != "oauth2"), "oauth2")
    return {
        "bearer": {"type": "bearer", "token": "t"},
        "basic": {"type": "basic", "username": "u", "password": "p"},
        "header": {"type": "header", "name": "X-Api-Key", "value": "k"},
        "query": {"type": "query", "name": "api_key", "value": "k"},
        "oauth2": {
            "type": "oauth2", "access_token": "a", "refresh_token": "r", "token_url": token_url,
            "client_id": "c", "client_secret": "s", "expires_at": "2099-01-01T00:00:00Z",
        },
    }[kind]  # fmt: skip


@pytest.mark.parametrize("name", sorted(builtin()))
async def test_over_its_limit_the_gateway_waits_for_the_advertised_reset(
    name: str, make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    entry = builtin()[name]
    server = await aiohttp_server(create_imitator_app(entry, limit=LIMIT, window=WINDOW), host="127.0.0.1")
    state = server.app[IMITATOR]
    gw = await make_gateway(providers={name: {"answers": scaled_answers(entry)}})
    credential = {
        "id": f"cred-{name}",
        "provider": name,
        "base_url": str(server.make_url("")).rstrip("/"),
        "auth": auth_for(entry, str(server.make_url("/token"))),
        "rate_limit": {"rate": 1000, "per": 1, "burst": 1000, "windows": [], "rules": [], "max_wait": 10},
    }
    created = await gw.client.post("/v1/credentials", json=credential, headers=gw.auth())
    assert created.status == 201, await created.text()
    statuses = []
    for n in range(CALLS):
        resp = await gw.client.get(f"/v1/proxy/credential/cred-{name}/items/{n}", headers=gw.auth())
        statuses.append(resp.status)
    answers = entry.definition.answers
    throttle = answers.throttle_statuses[0]
    # An entry whose headers report the spent window is paused by the answer that spent it: no refusal.
    reports = any(s.reset or s.window_header or s.window for s in answers.headers)
    assert len(state.refusals) <= (0 if reports else 1), state.answers
    # Only a 429/503 is resent after the pause; another throttle status (Google's 403) reaches the client.
    assert statuses.count(200) >= CALLS - (0 if throttle in (429, 503) else 1), statuses
    windows: dict[int, int] = {}
    for when, status in state.answers:
        if status == 200:
            index = math.floor((when - state.started) / WINDOW)
            windows[index] = windows.get(index, 0) + 1
    assert max(windows.values()) <= LIMIT, windows
    assert len(windows) >= 2  # the calls past the limit went out in a later window, after the reset


def test_the_imitator_renders_the_entry_formats() -> None:
    """Usage strings follow the entry's pattern; resets come in its unit, rounded up."""
    assert render_usage(r"api-usage=(\d+)/(\d+)", 3, 5) == "api-usage=3/5"
    assert render_usage(r"(\d+)\s*/\s*(\d+)", 32, 40) == "32/40"
    assert render_reset(1000.2, "epoch_seconds", 999.0) == "1001"
    assert render_reset(1000.2, "duration", 998.0) == "2.200s"
    assert render_reset(1000.5, "duration", 1000.25) == "250ms"
    assert render_reset(1000.2, "iso8601", 999.0) == "1970-01-01T00:16:41Z"
