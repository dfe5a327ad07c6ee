"""``/readyz`` reports the pacing backend: unready while Redis is unreachable, ready on the defaults."""

from __future__ import annotations

from tests.conftest import GatewayFactory
from tests.support import free_port


async def test_readyz_names_pacing_when_redis_is_down(make_gateway: GatewayFactory) -> None:
    """With the Redis backend on a closed port, /readyz answers 503 with the pacing check false."""
    gw = await make_gateway(pacing={"backend": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    resp = await gw.client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"] == {"store": True, "pacing": False}


async def test_readyz_is_ready_on_the_defaults(make_gateway: GatewayFactory) -> None:
    """With local pacing and a reachable store, /readyz answers 200 with every check true."""
    gw = await make_gateway()
    resp = await gw.client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"] == {"store": True, "pacing": True}
