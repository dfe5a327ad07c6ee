"""A Stripe customer copied from the stream goes back to Stripe as it is (docs/mutations.md's promise).

Stripe refuses any parameter a write does not take ("Received unknown parameter: currency"): the
customer object carries answer-only fields (``currency``, ``delinquent``, ``discount``, ...), and the
sandbox refuses them as Stripe does.
"""

from __future__ import annotations

from typing import Any

from gateway.sandbox.common import SANDBOX
from tests.conftest import GatewayFactory
from tests.mutations.harness import connect


async def test_a_customer_from_the_stream_is_updated_as_it_is(
    make_gateway: GatewayFactory, aiohttp_server: Any
) -> None:
    """The full record a create answered, with one field changed, is a valid update."""
    env = await connect(await make_gateway(), aiohttp_server, "stripe")
    (record,) = await env.create({"name": "Paul Atreides", "email": "paul@arrakis.org"})
    assert {"currency", "delinquent", "discount", "object", "created"} <= set(record["data"])  # the object, whole
    changed = {**record["data"], "name": "Usul"}
    body = env.body("update", records=[{"upstream_id": record["upstream_id"], "data": changed}])
    status, answer, _ = await env.run(body)
    assert status == 200, answer
    customer = env.server.app[SANDBOX].table("customers")[record["upstream_id"]]
    assert customer["name"] == "Usul" and customer["email"] == "paul@arrakis.org"
