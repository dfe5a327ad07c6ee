"""A replica's lanes: callers served in arrival order whatever the places' grants do; late slots given back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from gateway.pacing.backend import Place, Refused, Reservation
from gateway.pacing.shared_queue import LATE, Granted, Lane, Polled, Queued, SharedQueue


def reservation(granted: Granted) -> Reservation:
    return Reservation((), granted.charges, granted.deadline, granted.place)


class FakeRedis:
    """Stands in for the script: each poll answers the grants the test put in ``next_grants``."""

    def __init__(self) -> None:
        self.next_grants: dict[str, Granted] = {}
        self.left: list[str] = []
        self.released: list[str] = []
        self.rejoined: list[str] = []

    async def poll(self, leaving: list[str]) -> Polled:
        self.left += leaving
        granted, self.next_grants = self.next_grants, {}
        return Polled(granted=granted, wake=float("inf"), retry_after=1)

    def release(self, given_back: Reservation) -> None:
        assert given_back.place is not None
        self.released.append(given_back.place.member)

    def rejoin(self, lane: Lane[str], granted: Granted) -> None:
        self.rejoined.append(granted.place.member)


def record(served: list[int], i: int, _: object) -> None:
    served.append(i)


async def until(condition: Callable[[], object], timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.001)


async def test_callers_of_a_lane_go_in_arrival_order_whatever_slot_each_place_gets() -> None:
    """Slots granted in reverse (later places first, in one poll, out of loop-time order) still go to
    the callers in the order they came."""
    loop = asyncio.get_running_loop()
    redis = FakeRedis()
    queue: SharedQueue[str] = SharedQueue(redis.poll, redis.release, redis.rejoin, renew_every=10)
    lane = queue.lane("lane", reservation)
    members = [f"{i:016d}|r|0|t" for i in range(8)]
    turns = [queue.join(lane, loop.time() + 60) for _ in members]
    for member in members:
        queue.entered(lane, Queued(member, wake=loop.time()))
    due = loop.time()
    redis.next_grants = {m: Granted(Place(m, i), (), due - i / 1000) for i, m in enumerate(reversed(members))}
    served: list[int] = []
    for i, turn in enumerate(turns):
        turn.add_done_callback(partial(record, served, i))
    queue.nudge()
    await asyncio.wait_for(asyncio.gather(*turns), 10)
    await queue.close()
    assert served == list(range(8))
    assert redis.released == redis.rejoined == []


async def test_a_slot_woken_too_late_is_given_back_and_the_first_caller_takes_the_next() -> None:
    """The first place's slot is found long past: it is given back and its place rejoins (no call is
    sent late), the first caller takes the second place's slot, the second caller the next one."""
    loop = asyncio.get_running_loop()
    redis = FakeRedis()
    queue: SharedQueue[str] = SharedQueue(redis.poll, redis.release, redis.rejoin, renew_every=10)
    lane = queue.lane("lane", reservation)
    first, second = queue.join(lane, loop.time() + 60), queue.join(lane, loop.time() + 60)
    now = loop.time()
    queue.entered(lane, Granted(Place("a", 1), (), deadline=now - 10 * LATE))  # found late
    queue.entered(lane, Granted(Place("b", 2), (), deadline=now + 0.05))
    result = await asyncio.wait_for(first, 10)
    assert isinstance(result, Reservation) and result.place == Place("b", 2)
    assert redis.rejoined == ["a"] and not second.done()
    queue.entered(lane, Granted(Place("a", 1), (), deadline=loop.time()))  # the rejoined place, on time
    result = await asyncio.wait_for(second, 10)
    assert isinstance(result, Reservation) and result.place == Place("a", 1)
    await queue.close()


async def test_a_caller_that_leaves_takes_the_newest_place_with_it() -> None:
    """Of three callers the first leaves: the newest queued place leaves Redis, and the two left are
    served by the two older places, in order; a refusal of a place on its way refuses the newest caller."""
    loop = asyncio.get_running_loop()
    redis = FakeRedis()
    queue: SharedQueue[str] = SharedQueue(redis.poll, redis.release, redis.rejoin, renew_every=10)
    lane = queue.lane("lane", reservation)
    turns = [queue.join(lane, loop.time() + 60) for _ in range(3)]
    for i in range(3):
        queue.entered(lane, Queued(f"{i:016d}", wake=loop.time() + 60))
    turns[0].cancel()
    queue.leave(lane, turns[0])
    await until(lambda: redis.left)
    assert redis.left == [f"{2:016d}"]
    redis.next_grants = {f"{i:016d}": Granted(Place(f"{i:016d}", i), (), loop.time()) for i in range(2)}
    queue.nudge()
    served = await asyncio.wait_for(asyncio.gather(*turns[1:]), 10)
    assert [r.place for r in served if isinstance(r, Reservation)] == [Place(f"{i:016d}", i) for i in range(2)]
    extra = [queue.join(lane, loop.time() + 60) for _ in range(2)]
    queue.entered(lane, Refused(retry_after=3))
    assert await asyncio.wait_for(extra[1], 10) == Refused(retry_after=3) and not extra[0].done()
    await queue.close()


async def test_a_caller_that_runs_too_late_for_its_slot_is_first_again() -> None:
    """A slot handed over on time whose caller only runs later than the headroom goes back (its place
    rejoins), and that caller, not the newer one, takes the next slot."""
    loop = asyncio.get_running_loop()
    redis = FakeRedis()
    queue: SharedQueue[str] = SharedQueue(redis.poll, redis.release, redis.rejoin, renew_every=10)
    lane = queue.lane("lane", reservation)
    older, newer = queue.join(lane, loop.time() + 60), queue.join(lane, loop.time() + 60)
    queue.entered(lane, Granted(Place("a", 1), (), deadline=loop.time()))
    handed = await asyncio.wait_for(older, 10)
    assert isinstance(handed, Reservation)
    again = queue.again(lane, handed, loop.time() + 60, ticket=0)
    assert redis.rejoined == ["a"]
    queue.entered(lane, Granted(Place("b", 2), (), deadline=loop.time()))
    result = await asyncio.wait_for(again, 10)
    assert isinstance(result, Reservation) and result.place == Place("b", 2) and not newer.done()
    await queue.close()


async def test_callers_that_run_too_late_keep_their_order_and_no_later_caller_goes_first() -> None:
    """One stall makes three handed slots too late for two callers and not for the third, which ran
    last: the two wait again in their order, and the third gives its slot on time to the first of
    them and waits behind the second (it used to go first, and the two came back reversed). The
    first, running on time with it, keeps it: the later callers waiting again do not take it back."""
    loop = asyncio.get_running_loop()
    redis = FakeRedis()
    queue: SharedQueue[str] = SharedQueue(redis.poll, redis.release, redis.rejoin, renew_every=10)
    lane = queue.lane("lane", reservation)
    turns = [queue.join(lane, loop.time() + 60) for _ in range(4)]
    for i, member in enumerate("abc"):
        queue.entered(lane, Granted(Place(member, i), (), deadline=loop.time()))
    handed = [await asyncio.wait_for(turn, 10) for turn in turns[:3]]
    assert all(isinstance(r, Reservation) for r in handed)
    assert not queue.overtaking("lane", 2)
    waiting = []
    for ticket, slot in enumerate(handed[:2]):
        assert isinstance(slot, Reservation)
        waiting.append(queue.again(lane, slot, loop.time() + 60, ticket))
    assert redis.rejoined == ["a", "b"] and queue.overtaking("lane", 2)
    third = handed[2]
    assert isinstance(third, Reservation)
    waiting.append(queue.hand_over(lane, third, loop.time() + 60, 2))
    first = await asyncio.wait_for(waiting[0], 10)
    assert isinstance(first, Reservation) and first.place == Place("c", 2) and not waiting[1].done()
    assert not queue.overtaking("lane", 0)  # the callers waiting again now came after it
    for i, member in enumerate("ab"):
        queue.entered(lane, Granted(Place(member, i), (), deadline=loop.time()))
    served = await asyncio.wait_for(asyncio.gather(waiting[1], waiting[2]), 10)
    assert [r.place for r in served if isinstance(r, Reservation)] == [Place("a", 0), Place("b", 1)]
    assert not turns[3].done()
    await queue.close()
