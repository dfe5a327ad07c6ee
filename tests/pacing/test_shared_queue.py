"""A replica's calls granted in one poll wake in their slots' order, whatever order Redis answers in."""

from __future__ import annotations

import asyncio

from gateway.pacing.backend import Place, Reservation
from gateway.pacing.shared_queue import Granted, Polled, SharedQueue


async def test_grants_of_one_poll_wake_in_slot_order() -> None:
    loop = asyncio.get_running_loop()
    due = loop.time() - 1  # every slot already due: nothing but the resolution order decides
    members = [f"call-{i}" for i in range(8)]
    grants = {m: Granted(Place(m, tag=i), (), deadline=due + i / 1000) for i, m in enumerate(members)}

    async def poll(leaving: list[str]) -> Polled:
        return Polled(granted=dict(reversed(grants.items())), wake=float("inf"), retry_after=1)

    queue = SharedQueue(poll, release=lambda reservation: None, renew_every=10)
    woke: list[str] = []

    async def call(member: str) -> None:
        granted = queue.add(member, lambda g: Reservation((), g.charges, g.deadline, g.place), due + 60, due)
        await granted
        woke.append(member)

    await asyncio.wait_for(asyncio.gather(*(call(m) for m in members)), 10)
    await queue.close()
    assert woke == members
