"""A full scenario in a real ``gateway serve`` process logs JSON request lines and never a secret."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web

from gateway.sandbox import SANDBOX, run_sandbox, salesforce, stripe
from gateway.sandbox.generic import GenericState, create_generic_app
from gateway.sandbox.salesforce.oauth import OAUTH
from tests.ops.process import Deployment, GatewayProcess, start_gateway
from tests.support import free_port, poll

FAST = {"rate": 1000, "per": 1, "burst": 1000}
NOT_SECRET = ("type", "name", "prefix", "token_url", "client_id", "expires_at")
REQUEST_FIELDS = {"request_id", "route", "method", "status", "duration_ms", "upstream", "pacing_wait_ms"}


def secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(18)


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Upstreams:
    generic: str
    sf: web.Application
    stripe: web.Application
    stripe_key: str


class Scenario:
    """Talks to one gateway process and remembers every secret it handed over."""

    def __init__(self, gateway: GatewayProcess, session: aiohttp.ClientSession, tokens: dict[str, str]) -> None:
        self.gateway, self.session = gateway, session
        self.admin, self.proxy = tokens["admin"], tokens["proxy"]
        self.secrets = {f"{name} token": value for name, value in tokens.items()}

    async def call(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token or self.admin}"}
        async with self.session.request(method, self.gateway.url + path, headers=headers, **kwargs) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text.startswith("{") else text

    async def malformed(self) -> tuple[int, Any]:
        """A request the HTTP parser refuses (a control character in a header) that carries a token."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.gateway.port)
        head = f"GET /v1/credentials HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {self.proxy}\x01\r\n\r\n"
        writer.write(head.encode())
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
        status_line, _, body = answer.partition(b"\r\n\r\n")
        return int(status_line.split(b" ", 2)[1]), json.loads(body)

    async def proxied(self, path: str) -> int:
        return (await self.call("GET", f"/v1/proxy/credential/{path}", token=self.proxy))[0]

    async def create(self, kind: str, body: dict[str, Any]) -> None:
        status, answer = await self.call("POST", f"/v1/{kind}", json=body)
        assert status == 201, answer

    async def credential(self, cid: str, base_url: str, auth: dict[str, Any], provider: str = "rest") -> None:
        self.secrets.update({f"{cid} {k}": v for k, v in auth.items() if k not in NOT_SECRET and v})
        body = {"id": cid, "provider": provider, "base_url": base_url, "auth": auth, "rate_limit": FAST}
        await self.create("credentials", body)


async def add_objects(s: Scenario, up: Upstreams, pg_url: str) -> None:
    """Credentials of every auth type, a sync, a webhook and two postgres consumers."""
    generic, sf, st = up.generic, up.sf, up.stripe
    await s.credential("c-bearer", generic, {"type": "bearer", "token": secret("bearer-")})
    await s.credential("c-basic", generic, {"type": "basic", "username": secret("user-"), "password": secret("pw-")})
    await s.credential("c-header", generic, {"type": "header", "name": "X-Api-Key", "value": secret("hdr-")})
    await s.credential("c-query", generic, {"type": "query", "name": "api_key", "value": secret("qry-")})
    await s.credential("c-down", f"http://127.0.0.1:{free_port()}", {"type": "bearer", "token": secret("down-")})
    oauth, sf_url = sf[OAUTH], sf[SANDBOX].base_url
    await s.credential("c-oauth", sf_url, {
        "type": "oauth2", "access_token": secret("expired-"), "refresh_token": oauth.refresh_token,
        "token_url": f"{sf_url}/services/oauth2/token", "client_id": oauth.client_id,
        "client_secret": oauth.client_secret, "expires_at": "2020-01-01T00:00:00Z",
    }, provider="salesforce")  # fmt: skip
    stripe_auth = {"type": "basic", "username": up.stripe_key, "password": ""}
    await s.credential("c-stripe", st[SANDBOX].base_url, stripe_auth, provider="stripe")
    await s.create("syncs", {"id": "s-stripe", "credential_id": "c-stripe", "collections": ["stripe:customer"]})
    s.secrets["webhook secret"] = whsec = "whsec_" + secrets.token_hex(24)
    await s.create("consumers", {"id": "hooks", "kind": "webhook", "url": f"{generic}/echo/hook", "secret": whsec})
    s.secrets["dsn password"] = password = secret("dsnpw-")
    mirror = {"id": "mirror", "kind": "postgres", "dsn": with_password(pg_url, password), "table_prefix": "m_"}
    await s.create("consumers", mirror)
    down = f"postgresql://app:{password}@127.0.0.1:{free_port()}/app"
    await s.create("consumers", {"id": "mirror-down", "kind": "postgres", "dsn": down, "table_prefix": "d_"})


async def exercise(s: Scenario, up: Upstreams) -> None:
    """Proxied calls (good, secret query, upstream 401/500, unreachable), OAuth2 refresh, bad token, a header the
    HTTP parser refuses carrying a token, a mutation."""
    sf, st = up.sf, up.stripe
    s.secrets["query parameter"] = query_secret = secret("qp-")
    for cid in ("c-bearer", "c-basic", "c-header", "c-query"):
        assert await s.proxied(f"{cid}/echo/x?api_key={query_secret}&access_token={query_secret}") == 200
    assert await s.proxied("c-bearer/protected/x") == 401
    assert await s.proxied("c-down/echo/x") == 502
    assert await s.proxied("c-oauth/services/data/v59.0/sobjects/Contact") == 200
    assert sf[OAUTH].refreshes == 1
    s.secrets.update({f"refreshed access token {i}": token for i, token in enumerate(sf[OAUTH].issued)})
    st[SANDBOX].set_knobs(fault="5xx", fault_count=1)
    assert await s.proxied("c-stripe/v1/customers") == 500
    s.secrets["bad token"] = bad = "gw_" + secrets.token_urlsafe(32)
    assert (await s.call("GET", "/v1/credentials", token=bad))[0] == 401
    status, answer = await s.malformed()
    assert (status, answer["code"]) == (400, "invalid_request")
    record = {"data": {"name": "Paul", "email": "paul@arrakis.org"}}
    body = {"kind": "create", "sync_id": "s-stripe", "collection_id": "stripe:customer", "records": [record]}
    status, answer = await s.call("POST", "/v1/mutations/run", json=body)
    assert status == 200, answer

    async def delivered() -> bool:
        views = [(await s.call("GET", f"/v1/consumers/{cid}"))[1] for cid in ("hooks", "mirror")]
        return all(view["pending"] == 0 for view in views)

    await poll("the webhook and postgres consumers delivered the mutation's event", delivered)


async def test_no_secret_reaches_the_log_and_request_lines_are_complete(tmp_path: Path, pg_url: str) -> None:
    """No token, key, credential secret, refreshed token, webhook secret or DSN password appears in the output."""
    sf_app = salesforce.create_app(client_secret=secret("sfcs-"), refresh_token=secret("sfrt-"))
    stripe_key = secret("sk_test_")
    stripe_app = stripe.create_app(secret_key=stripe_key)
    async with (
        run_sandbox(create_generic_app(GenericState())) as generic,
        run_sandbox(sf_app),
        run_sandbox(stripe_app),
    ):
        upstreams = Upstreams(generic, sf_app, stripe_app, stripe_key)
        store_password = secret("storepw-")  # PostgreSQL here trusts loopback, so any password connects
        store = {"url": with_password(pg_url, store_password)}
        sections = {"store": store, "log": {"format": "json", "level": "debug"}}
        deployment = Deployment.create(tmp_path, sections)
        tokens = {
            "admin": await deployment.cli("tokens", "create", "--name", "admin", "--scope", "admin"),
            "proxy": await deployment.cli("tokens", "create", "--name", "proxy", "--scope", "proxy"),
        }
        async with start_gateway(deployment, tmp_path) as gateway, aiohttp.ClientSession() as session:
            scenario = Scenario(gateway, session, tokens)
            await add_objects(scenario, upstreams, pg_url)
            await exercise(scenario, upstreams)
            scenario.secrets["encryption key"] = deployment.key.split(":", 1)[1]
            scenario.secrets["store password"] = store_password
            gateway.proc.send_signal(signal.SIGTERM)  # the shutdown's lines are checked too
            assert await gateway.wait_exit(30) == 0
            output = gateway.output()
    leaked = [name for name, value in scenario.secrets.items() if value in output]
    assert not leaked, f"secrets in the log: {leaked}"
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    requests = [line for line in lines if line.get("event") == "request"]
    assert all(set(line) >= REQUEST_FIELDS for line in requests)
    proxied = [line for line in requests if line["route"] == "proxy_credential" and line["status"] == 200]
    assert {line["upstream"] for line in proxied} == {"rest", "salesforce"}
    assert lines[-1]["event"] == "stopped"
    assert all(isinstance(line["pacing_wait_ms"], (int, float)) for line in proxied)
