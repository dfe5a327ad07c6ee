"""Idempotency-Key claims in the real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import Conflict
from gateway.http import appkeys
from gateway.mutations.idempotency import IdempotencyKeys, Stored, request_hash
from tests.conftest import GatewayFactory


async def _keys(make_gateway: GatewayFactory, **options: float) -> IdempotencyKeys:
    gw = await make_gateway()
    return IdempotencyKeys(gw.app[appkeys.ENGINE], **options)  # type: ignore[arg-type]


def test_request_hash_ignores_key_order_but_not_values() -> None:
    """Bodies that differ only in key order hash alike; another value hashes differently."""
    assert request_hash({"a": 1, "b": [1, 2]}) == request_hash({"b": [1, 2], "a": 1})
    assert request_hash({"a": 1}) != request_hash({"a": 2})


async def test_completed_key_replays_the_stored_answer(make_gateway: GatewayFactory) -> None:
    """After the first request completes, the same key and body get its stored status and body."""
    keys = await _keys(make_gateway)
    assert await keys.claim("tok:k1", "h1") is None
    await keys.complete("tok:k1", 200, {"records": [1]})
    assert await keys.claim("tok:k1", "h1") == Stored(200, {"records": [1]})


async def test_same_key_other_body_conflicts(make_gateway: GatewayFactory) -> None:
    """Reusing a key with another body is a 409 conflict."""
    keys = await _keys(make_gateway)
    assert await keys.claim("tok:k2", "h1") is None
    await keys.complete("tok:k2", 200, {})
    with pytest.raises(Conflict, match="different request body"):
        await keys.claim("tok:k2", "h2")


async def test_duplicate_waits_for_the_first_to_complete(make_gateway: GatewayFactory) -> None:
    """A duplicate arriving while the first runs gets the first's answer once it is stored."""
    keys = await _keys(make_gateway)
    assert await keys.claim("tok:k3", "h") is None
    waiter = asyncio.create_task(keys.claim("tok:k3", "h"))
    await asyncio.wait({waiter}, timeout=0.3)
    assert not waiter.done()
    await keys.complete("tok:k3", 201, {"ok": True})
    assert await asyncio.wait_for(waiter, 10) == Stored(201, {"ok": True})


async def test_released_claim_can_be_taken_again(make_gateway: GatewayFactory) -> None:
    """Releasing an unfinished claim lets the next request with that key run."""
    keys = await _keys(make_gateway)
    assert await keys.claim("tok:k4", "h") is None
    await keys.release("tok:k4")
    assert await keys.claim("tok:k4", "h") is None


async def test_expired_key_is_claimed_afresh(make_gateway: GatewayFactory) -> None:
    """A row past its 24 h lifetime no longer replays; the next request owns the key."""
    now = [1000.0]
    keys = await _keys(make_gateway)
    keys.clock = lambda: now[0]
    assert await keys.claim("tok:k5", "h") is None
    await keys.complete("tok:k5", 200, {"old": True})
    now[0] += keys.ttl + 1
    assert await keys.claim("tok:k5", "other") is None


async def test_claim_of_a_dead_request_lapses_after_the_claim_lease(make_gateway: GatewayFactory) -> None:
    """An unfinished claim (its replica died) no longer blocks the key once its lease is over."""
    now = [1000.0]
    keys = await _keys(make_gateway, wait=0.2)
    keys.clock = lambda: now[0]
    assert await keys.claim("tok:k7", "h") is None
    now[0] += keys.claim_lease + 1
    assert await keys.claim("tok:k7", "h") is None


async def test_completed_answer_outlives_the_claim_lease(make_gateway: GatewayFactory) -> None:
    """Completing a claim extends the row to the full 24 h, past the claim lease."""
    now = [1000.0]
    keys = await _keys(make_gateway)
    keys.clock = lambda: now[0]
    assert await keys.claim("tok:k8", "h") is None
    await keys.complete("tok:k8", 200, {"kept": True})
    now[0] += keys.claim_lease + 1
    assert await keys.claim("tok:k8", "h") == Stored(200, {"kept": True})


async def test_unfinished_claim_past_the_wait_is_a_conflict(make_gateway: GatewayFactory) -> None:
    """A duplicate gives up with 409 when the first request is still running after the wait."""
    keys = await _keys(make_gateway, wait=0.2)
    assert await keys.claim("tok:k6", "h") is None
    with pytest.raises(Conflict, match="still in progress"):
        await keys.claim("tok:k6", "h")
