"""Locks per key that are forgotten once nobody holds or waits for them."""

from __future__ import annotations

import asyncio

from gateway.keylocks import KeyLocks


async def test_a_key_excludes_while_other_keys_go_on_and_nothing_is_left_after() -> None:
    locks: KeyLocks[str] = KeyLocks()
    inside: list[str] = []
    release = asyncio.Event()

    async def hold(key: str, name: str) -> None:
        async with locks.hold(key):
            inside.append(name)
            await release.wait()
            inside.remove(name)

    tasks = [asyncio.create_task(hold("a", "a1")), asyncio.create_task(hold("a", "a2"))]
    tasks.append(asyncio.create_task(hold("b", "b1")))
    while len(inside) < 2:
        await asyncio.sleep(0.001)
    assert sorted(inside) == ["a1", "b1"] and len(locks) == 2  # a2 waits for a1
    release.set()
    await asyncio.gather(*tasks)
    assert len(locks) == 0


async def test_many_keys_leave_nothing_behind_even_when_cancelled_or_failing() -> None:
    locks: KeyLocks[int] = KeyLocks()
    for n in range(20_000):
        async with locks.hold(n):
            pass
    assert len(locks) == 0

    async with locks.hold(0):
        waiter = asyncio.create_task(locks.hold(0).__aenter__())
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert len(locks) == 1
    assert len(locks) == 0
    try:
        async with locks.hold(1):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert len(locks) == 0
