"""``gateway serve --demo``: the app built as ``server.serve`` builds it, driven by its own banner."""

from __future__ import annotations

import io
import json
import shlex
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import structlog

from gateway.app import create_app
from gateway.config import Config
from gateway.observability.logs import configure_logging
from gateway.sandbox.demo import DEMO, Demo, demo_config, install_demo
from gateway.sandbox.runner import run_sandbox
from gateway.sandbox.salesforce import SalesforceState


@dataclass
class Curl:
    method: str
    url: str
    headers: dict[str, str]
    body: str | None


@dataclass
class Running:
    demo: Demo
    out: str
    err: str
    calls: list[Curl]


def parse_curl(line: str) -> Curl:
    """The method, URL, headers and body of one banner curl line, read as a shell would split it."""
    words = shlex.split(line)
    assert words[0] == "curl"
    method, url, headers, body = "GET", "", {}, None
    rest = iter(words[1:])
    for word in rest:
        if word == "-X":
            method = next(rest)
        elif word == "-H":
            name, _, value = next(rest).partition(": ")
            headers[name] = value
        elif word == "-d":
            body = next(rest)
        elif not word.startswith("-"):
            url = word
    return Curl(method, url, headers, body)


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """Every log line the gateway writes, through the production pipeline (redaction included)."""
    saved = structlog.get_config()
    buffer = io.StringIO()
    configure_logging(format="json", level="debug")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
    yield buffer
    structlog.configure(**saved)


@pytest.fixture
async def demo(capsys: pytest.CaptureFixture[str], logs: io.StringIO) -> AsyncIterator[Running]:
    """The demo gateway on a free port, as ``server.serve`` builds it, with the banner it printed."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # held from here on: the sandboxes started below cannot take it
    port = int(listener.getsockname()[1])
    config, keyring = demo_config(Config.model_validate({"server": {"port": port}, "metrics": {"port": port}}))
    app = create_app(config, keyring=keyring)
    install_demo(app)
    async with run_sandbox(app, sock=listener):
        out = capsys.readouterr()
        calls = [parse_curl(line) for line in out.out.splitlines() if line.startswith("curl ")]
        yield Running(app[DEMO], out.out, out.err, calls)


async def call(curl: Curl) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(curl.method, curl.url, headers=curl.headers, data=curl.body) as resp,
    ):
        return resp.status, await resp.json()


async def test_demo_says_its_key_and_store_are_ephemeral(demo: Running) -> None:
    """The demo warns on stderr that its encryption key and store are throwaway."""
    assert "ephemeral encryption key" in demo.err and "gateway-demo-" in demo.err


async def test_banner_has_four_working_commands_and_seeded_sandboxes(demo: Running) -> None:
    """The banner prints the mutation, proxy, sandbox change and receive commands; sandboxes hold seed data."""
    assert [c.url.split("/", 3)[3] for c in demo.calls] == [
        "v1/mutations/run",
        "v1/proxy/sync/sync-hubspot/crm/v3/objects/contacts",
        "_sandbox/records/contact",
        "v1/consumers/demo-consumer/receive",
    ]
    assert "Authorization" not in demo.calls[2].headers  # the admin token never goes to an upstream
    assert set(demo.demo.sandboxes) == {"salesforce", "hubspot", "stripe", "airtable"}
    assert all(state.objects for state in demo.demo.sandboxes.values())


async def test_proxy_line_lists_the_seeded_hubspot_contacts(demo: Running) -> None:
    """The proxy curl line returns the HubSpot sandbox's seeded contacts through the gateway."""
    status, body = await call(demo.calls[1])
    assert status == 200
    assert {r["properties"]["email"] for r in body["results"]} >= {"ada@example.com", "grace@example.com"}


async def test_mutation_line_creates_a_contact_that_the_consumer_receives(demo: Running) -> None:
    """The mutation line writes a Salesforce contact upstream; the receive line delivers its event."""
    status, body = await call(demo.calls[0])
    assert status == 200, body
    [record] = body["records"]
    salesforce = demo.demo.sandboxes["salesforce"]
    assert isinstance(salesforce, SalesforceState)
    assert salesforce.table("Contact")[record["upstream_id"]]["LastName"] == "Johnson"
    status, received = await call(demo.calls[3])
    assert status == 200
    events = [item["event"] for item in received["data"]]
    assert [e["record"]["upstream_id"] for e in events] == [record["upstream_id"]]
    assert events[0]["action"] == "insert"


async def test_a_change_made_in_the_sandbox_reaches_the_consumer(demo: Running) -> None:
    """The sandbox line changes Salesforce "from outside"; the sync's poll brings it to the receive line."""
    status, body = await call(demo.calls[2])
    assert status == 200, body
    created = body["record"]["Id"]
    events: list[dict[str, Any]] = []
    for _ in range(4):  # each receive long-polls up to 5 s; the sync polls every 2 s
        status, received = await call(demo.calls[3])
        assert status == 200
        events = [item["event"] for item in received["data"]]
        if events:
            break
    assert [(e["action"], e["record"]["upstream_id"]) for e in events] == [("insert", created)]
    assert events[0]["record"]["data"]["LastName"] == "Vaughan"


async def test_token_appears_in_the_banner_only(demo: Running, logs: io.StringIO) -> None:
    """After requests are served, the admin token is in the banner and in no log line."""
    token = demo.calls[1].headers["Authorization"].removeprefix("Bearer ")
    await call(demo.calls[1])
    await call(demo.calls[3])
    lines = logs.getvalue().splitlines()
    assert token in demo.out
    assert any(json.loads(line).get("route") == "proxy_sync" for line in lines)
    assert not [line for line in lines + demo.err.splitlines() if token in line]
