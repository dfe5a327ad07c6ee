"""``/metrics`` keeps SPEC.md's names and labels and a bounded series count under unbounded traffic."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.sandbox.common import Knobs
from tests.conftest import Gateway, GatewayFactory
from tests.mutations.harness import Env, connect
from tests.upstream.helpers import Upstream, add_credential, add_sync, oauth2_auth, start_upstream

SPEC_LABELS = {
    "gateway_http_requests_total": {"route", "method", "status"},
    "gateway_http_request_duration_seconds": {"route"},
    "gateway_upstream_requests_total": {"provider", "status"},
    "gateway_upstream_request_duration_seconds": {"provider"},
    "gateway_pacing_wait_seconds": {"provider", "priority"},
    "gateway_pacing_queue_depth": {"provider", "priority"},
    "gateway_pacing_rejections_total": {"provider"},
    "gateway_upstream_throttled_total": {"provider"},
    "gateway_mutations_total": {"kind", "provider", "outcome"},
    "gateway_mutation_records_total": {"kind", "provider"},
    "gateway_consumer_await_seconds": set(),
    "gateway_consumer_pending_events": {"consumer"},
    "gateway_oauth_refreshes_total": {"provider", "outcome"},
}
MAX_SERIES = 300
ODD_METHODS = ("PROPFIND", "PURGE", "MKCOL", "LOCK")  # each must be counted as method="OTHER"
Series = frozenset[tuple[str, frozenset[tuple[str, str]]]]


def scrape(text: str) -> Series:
    """Each (metric, label set) once; histogram buckets and ``_created`` twins fold into their series."""
    series = set()
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                labels = frozenset((k, v) for k, v in sample.labels.items() if k != "le")
                series.add((name, labels))
    return frozenset(series)


@dataclass
class Traffic:
    """Every kind of request the gateway serves, keyed by an id that makes paths and records distinct."""

    gw: Gateway
    upstream: Upstream
    stripe: Env
    proxy_token: str

    async def status(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> int:
        async with self.gw.client.request(method, path, headers=self.gw.auth(token), **kwargs) as resp:
            await resp.read()
            return resp.status

    async def per_id(self, i: int) -> None:
        """Proxied calls on a path of their own, plus every tenth id a 404, 401, 405 and odd method."""
        kind, object_id = ("sync", "sync-1") if i % 2 else ("credential", "cred-1")
        method = ("GET", "POST", "PUT", "PATCH", "DELETE")[i % 5]
        path = f"/v1/proxy/{kind}/{object_id}/echo/item-{i}/p{i}?record=rec-{i}"
        assert await self.status(method, path, token=self.proxy_token) == 200
        if i % 10 == 0:
            assert await self.status("GET", f"/v1/proxy/credential/missing-{i}/x", token=self.proxy_token) == 404
            assert await self.status("GET", f"/v1/credentials/missing-{i}") == 404
            assert await self.status("GET", f"/v1/syncs?x={i}", token=f"gw_bad_token_{i:030d}") == 401
            assert await self.status(ODD_METHODS[i // 10 % 4], "/v1/credentials") == 405
            assert await self.status("GET", f"/nowhere/{i}") == 404

    async def mutations(self, ids: range) -> None:
        """Creates, updates per record id, and a 404 update, against the Stripe sandbox."""
        created = await self.stripe.create(*({"name": f"Customer {i}", "email": f"c{i}@example.com"} for i in ids))
        for record in created:
            body = self.stripe.body("update", records=[{"upstream_id": record["upstream_id"], "data": {"name": "x"}}])
            assert (await self.stripe.run(body))[0] == 200
        missing = self.stripe.body("update", records=[{"upstream_id": f"cus_missing{ids[0]}", "data": {"name": "x"}}])
        assert (await self.stripe.run(missing))[0] == 404

    async def consumers(self) -> None:
        """Receive and ack on the pull consumer, ack of unknown ids, a bad body (400)."""
        async with self.gw.client.post(
            "/v1/consumers/pull-1/receive", json={"batch_size": 100, "wait_for": 0}, headers=self.gw.auth()
        ) as resp:
            ack_ids = [item["ack_id"] for item in (await resp.json())["data"]]
        assert await self.status("POST", "/v1/consumers/pull-1/ack", json={"ack_ids": [*ack_ids, "nope"]}) == 200
        assert await self.status("POST", "/v1/consumers/pull-1/ack", data=b"not json") == 400

    async def round(self, ids: range) -> None:
        for chunk in range(ids.start, ids.stop, 50):
            await asyncio.gather(*(self.per_id(i) for i in range(chunk, min(chunk + 50, ids.stop))))
        await self.mutations(range(ids.start, ids.start + max(len(ids) // 20, 1)))
        await self.consumers()
        assert await self.status("POST", "/v1/mutations/run", data=b"{") == 400


async def one_off_traffic(t: Traffic) -> None:
    """What happens once: pacing waits and a rejection, an upstream throttle, an OAuth2 refresh, an awaited mutation."""
    await add_credential(t.gw, t.upstream.url, cid="cred-tight", rate_limit={"rate": 1, "per": 60, "burst": 1,
                                                                             "max_wait": 0})  # fmt: skip
    statuses = [await t.status("GET", "/v1/proxy/credential/cred-tight/echo/x", token=t.proxy_token) for _ in "ab"]
    assert statuses == [200, 429]
    await add_credential(t.gw, t.upstream.url, cid="cred-queue", rate_limit={"rate": 20, "per": 1, "burst": 1})
    queued = [t.status("GET", "/v1/proxy/credential/cred-queue/echo/x", token=t.proxy_token) for _ in range(3)]
    assert await asyncio.gather(*queued) == [200] * 3
    t.upstream.state.throttle, t.upstream.state.retry_after = 1, 0
    await t.status("GET", "/v1/proxy/credential/cred-1/limited/x", token=t.proxy_token)
    await add_credential(t.gw, t.upstream.url, oauth2_auth(t.upstream, expires_at="2020-01-01T00:00:00Z"), cid="c-o")
    assert await t.status("GET", "/v1/proxy/credential/c-o/protected/x", token=t.proxy_token) == 200
    body = t.stripe.body("create", records=[{"data": {"name": "Awaited"}}], await_consumer_ids=["pull-1"],
                         await_consumers_timeout=0)  # fmt: skip
    assert (await t.stripe.run(body))[0] == 500
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert await t.status("GET", probe) == 200


async def start_traffic(gw: Gateway, aiohttp_server: Any) -> Traffic:
    upstream = await start_upstream(aiohttp_server)
    await add_sync(gw, await add_credential(gw, upstream.url))
    stripe = await connect(gw, aiohttp_server, "stripe", knobs=Knobs())
    consumer = {"id": "pull-1", "kind": "pull", "visibility_timeout": 30}
    async with gw.client.post("/v1/consumers", json=consumer, headers=gw.auth()) as resp:
        assert resp.status == 201, await resp.text()
    return Traffic(gw, upstream, stripe, await gw.token("proxy", ["proxy"]))


async def test_metric_series_stay_bounded_and_match_the_spec(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """After traffic over 1,000 paths and many record ids, spec metrics keep their labels and no series is added."""
    gw = await make_gateway()
    traffic = await start_traffic(gw, aiohttp_server)
    await one_off_traffic(traffic)
    await traffic.round(range(0, 40))
    first = scrape(await (await gw.client.get("/metrics")).text())
    await traffic.round(range(40, 1000))
    text = await (await gw.client.get("/metrics")).text()
    after = scrape(text)
    assert after == first, f"new series: {sorted(after - first)}"
    assert len(after) < MAX_SERIES
    for name, labels in SPEC_LABELS.items():
        found = [dict(series_labels) for series_name, series_labels in after if series_name == name]
        assert found, f"{name} has no series"
        assert all(set(item) == labels for item in found), (name, found)
    fragments = ("item-", "rec-", "missing", "cus_", "gw_bad", "cred-", "sync-1", *ODD_METHODS)
    assert not any(fragment in text for fragment in fragments)


async def test_credential_label_only_when_opted_in(make_gateway: GatewayFactory, aiohttp_server: Any) -> None:
    """With ``metrics.per_credential`` on, upstream calls are also counted per credential id."""
    gw = await make_gateway(metrics={"per_credential": True})
    upstream = await start_upstream(aiohttp_server)
    await add_credential(gw, upstream.url)
    async with gw.client.get("/v1/proxy/credential/cred-1/echo/x", headers=gw.auth()) as resp:
        assert resp.status == 200
    series = scrape(await (await gw.client.get("/metrics")).text())
    labels = frozenset({("credential", "cred-1"), ("status", "200")})
    assert ("gateway_credential_upstream_requests_total", labels) in series
