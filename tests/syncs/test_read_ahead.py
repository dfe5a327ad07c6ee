"""The sync's page reader (``_Ahead``): whatever ends its task, the committing side hears of it."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import InternalError
from gateway.providers.capture.base import Cursor, Page
from gateway.syncs.poller import _Ahead


async def test_pages_come_in_order_and_a_failed_read_follows_them() -> None:
    async def fetch(cursor: Cursor) -> Page:
        n = int(cursor["n"])
        if n == 3:
            raise ValueError("garbage page")
        return Page([], {"n": n + 1})

    ahead = _Ahead(fetch, {"n": 0})
    read: list[Cursor] = []
    with pytest.raises(ValueError, match="garbage page"):
        while True:
            read += [asked for asked, _ in await asyncio.wait_for(ahead.next(), 10)]
    assert read == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_a_fetch_cancelled_by_someone_else_is_an_error_not_a_wait_for_ever() -> None:
    """A fetch whose awaited future another task cancels dies of a CancelledError it did not ask for:
    the reader task ends without handing anything on. The committer must get an error (the poller then
    backs off and reads again from the stored cursor) instead of waiting for a page that never comes."""
    shared: asyncio.Future[Page] = asyncio.get_running_loop().create_future()

    async def fetch(cursor: Cursor) -> Page:
        return await shared  # not shielded, as a load some other caller owns might be

    ahead = _Ahead(fetch, {"n": 0})
    asyncio.get_running_loop().call_later(0.01, shared.cancel)
    with pytest.raises(InternalError, match="cancelled"):
        await asyncio.wait_for(ahead.next(), 10)
    ahead.close()
