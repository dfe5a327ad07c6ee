"""Egress policy: no upstream call, token refresh or webhook POST ever connects to a denied address.

Nothing here connects to 169.254.0.0/16: a loopback address of our own (127.0.0.77) stands for a
denied network, and a fixed resolver answers it for public-looking names, as a rebinding DNS would.
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.config import Config
from gateway.domain.objects import Consumer
from gateway.egress import EgressPolicy, parse_rule
from gateway.errors import ConfigError
from gateway.http import appkeys
from gateway.stream.consumers.webhook import DeliveryFailed, WebhookSink
from tests.conftest import GatewayFactory
from tests.upstream.helpers import add_credential, oauth2_auth, start_upstream

DENIED = "127.0.0.77"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class FixedResolver(AbstractResolver):
    """A DNS that answers what the test says (a public name -> a denied address)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        return None


async def _denied_upstream(aiohttp_server: Any) -> tuple[int, list[str]]:
    """A server on the denied address that records any request reaching it (none should)."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"reached": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    server = await aiohttp_server(app, host=DENIED)
    return server.port, seen


async def test_a_public_name_resolving_to_a_denied_address_is_refused(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    port, seen = await _denied_upstream(aiohttp_server)
    allowed = await start_upstream(aiohttp_server)
    gw = await make_gateway(upstream={"deny": [DENIED]})
    gw.app[appkeys.UPSTREAM].egress.lookup = FixedResolver(
        {"api.public-example.com": [DENIED], "mixed.public-example.com": [DENIED, "127.0.0.1"]}
    )
    await add_credential(gw, f"http://api.public-example.com:{port}/v1", cid="by-name")
    await add_credential(gw, f"http://{DENIED}:{port}/v1", cid="by-address")
    await add_credential(gw, f"http://[::ffff:{DENIED}]:{port}/v1", cid="mapped-v6")
    await add_credential(gw, allowed.url.replace("127.0.0.1", "mixed.public-example.com") + "/echo", cid="mixed")
    for cid in ("by-name", "by-address", "mapped-v6"):
        resp = await gw.client.get(f"/v1/proxy/credential/{cid}/customers", headers=gw.auth())
        assert resp.status == 403, await resp.text()
        body = await resp.json()
        assert body["code"] == "upstream_denied" and "egress policy" in body["error"]
    assert seen == []  # nothing ever reached the denied address
    resp = await gw.client.get("/v1/proxy/credential/mixed/x", headers=gw.auth())
    assert resp.status == 200 and allowed.state.requests == 1  # the allowed answer of a mixed name is used


async def test_the_unspecified_address_is_denied_as_the_loopback_it_reaches(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """``0.0.0.0`` connects to this host's loopback: a deny rule for loopback must not be walked around."""
    upstream = await start_upstream(aiohttp_server)
    port = upstream.url.rsplit(":", 1)[1]
    gw = await make_gateway(upstream={"deny": ["127.0.0.0/8"]})
    await add_credential(gw, f"http://0.0.0.0:{port}/echo")
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
    assert resp.status == 403, await resp.text()
    assert (await resp.json())["code"] == "upstream_denied"
    assert upstream.state.requests == 0


async def test_an_oauth2_token_url_on_a_denied_address_is_never_called(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    port, seen = await _denied_upstream(aiohttp_server)
    upstream = await start_upstream(aiohttp_server)
    gw = await make_gateway(upstream={"deny": [DENIED]})
    gw.app[appkeys.UPSTREAM].egress.lookup = FixedResolver({"login.public-example.com": [DENIED]})
    auth = {
        **oauth2_auth(upstream, expires_at="2000-01-01T00:00:00Z"),
        "token_url": f"http://login.public-example.com:{port}/oauth/token",
    }
    await add_credential(gw, upstream.url + "/echo", auth)
    resp = await gw.client.get("/v1/proxy/credential/cred-1/x", headers=gw.auth())
    assert resp.status == 403
    assert (await resp.json())["code"] == "upstream_denied"
    assert seen == [] and upstream.state.requests == 0


async def test_a_webhook_url_on_a_denied_address_is_never_posted(aiohttp_server: Any) -> None:
    port, seen = await _denied_upstream(aiohttp_server)
    policy = EgressPolicy([parse_rule(DENIED)])
    policy.lookup = FixedResolver({"hooks.public-example.com": [DENIED]})
    hook = Consumer(
        "h", "webhook", None, None, {"url": f"http://hooks.public-example.com:{port}/h", "secret": SECRET}, 0, "active"
    )
    async with aiohttp.ClientSession(connector=policy.connector()) as session:
        with pytest.raises(DeliveryFailed, match="egress policy"):
            await WebhookSink(session).deliver(hook, [])
    assert seen == []


def _config(**sections: Any) -> Config:
    return Config.model_validate({"store": {"url": "postgresql://gw:pw@127.0.0.1:5432/gw"}, **sections})


@pytest.mark.parametrize(
    ("address", "port", "allowed"),
    [
        ("169.254.169.254", 80, False),  # the metadata service, by default
        ("::ffff:169.254.169.254", 80, False),
        ("fe80::1%eth0", 443, False),
        ("127.0.0.1", 8080, False),  # our API listener
        ("127.0.0.1", 9091, False),  # our metrics listener
        ("127.0.0.1", 6379, False),  # our Redis
        ("127.0.0.1", 5432, False),  # our PostgreSQL
        ("0.0.0.0", 8080, False),  # the unspecified address dials our own loopback listener
        ("0.0.0.0", 8443, True),
        ("127.0.0.1", 8443, True),
        ("93.184.216.34", 443, True),
    ],
)
def test_the_default_policy_denies_link_local_and_our_own_endpoints(address: str, port: int, allowed: bool) -> None:
    policy = EgressPolicy.from_config(_config(pacing={"backend": "redis"}))
    assert policy.allows(None, address, port) is allowed


def test_allow_lists_and_host_rules() -> None:
    policy = EgressPolicy.from_config(
        _config(upstream={"allow": ["10.0.0.0/8", "api.partner.example"], "deny": ["10.9.0.0/16", "evil.example:443"]})
    )
    assert policy.allows(None, "10.1.2.3", 443)
    assert not policy.allows(None, "10.9.0.1", 443)  # deny wins over allow
    assert not policy.allows(None, "93.184.216.34", 443)  # not in the allow list
    assert policy.allows("api.partner.example", None, 443)
    assert not policy.allows("evil.example", None, 443) and not policy.allows("evil.example", None, 8443)
    assert not EgressPolicy([parse_rule("::1")]).allows(None, "::", 443)  # "::" dials ::1


@pytest.mark.parametrize("rule", ["10.0.0.0/33", "not a host", "host:port"])
def test_a_rule_that_does_not_parse_is_a_config_error_naming_the_key(rule: str) -> None:
    with pytest.raises(ConfigError, match=r"upstream\.deny\.2"):
        EgressPolicy.from_config(_config(upstream={"deny": ["169.254.0.0/16", "fe80::/10", rule]}))
