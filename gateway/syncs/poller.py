"""One sync's reading loop: backfill, then a poll every ``options.poll_interval`` seconds.

A round reads each collection page by page until its capture says it is caught up. Each page is
committed in ONE transaction: the cursor after it (conditional on the generation read, see
gateway/store/syncs.py) and the events of the records that changed. A crash between the upstream
answer and the commit re-reads that one page (its events at most twice, never lost); a commit
refused because someone else moved the cursor (a backfill request, a poller that took over) makes
the loop re-read the sync and go on from the stored cursor.

Pages are read by a task of their own, up to ``AHEAD`` pages before the commit that takes them (the
next page's cursor is known from each answer), so neither a commit nor a stall of the event loop
holds back the next call: with a bucket of burst 1 a call sent late is time lost for good, and at
Stripe's 100 calls/s a 10 ms interval is shorter than some commits on a loaded machine. The pages
that arrived while a commit ran are committed together, in order, in the next transaction (one
transaction per page could not keep up when a commit took longer than a page's interval); a page
fetched but not yet committed is re-read after a crash like any other uncommitted page.

A failed page (an upstream error, an answer that is not a page) marks the sync ``failing`` with
the error, keeps the cursor, and retries with exponential backoff; the next good page clears it. A
refusal that says when to ask again (``RateLimited``: the ``Retry-After`` of a 429 or 503, the provider's
penalty, Salesforce's spent-day hour, or the pacer refusing to queue through a pause) is no failure:
the sync stays ``backfilling`` or ``live``, shows ``throttled_until``, and waits exactly that long (the
backoff, grown during a long pause, would add up to ``MAX_BACKOFF`` after it).

Creates a crash left with an unknown outcome are settled from what the capture appended, in the
same transactions: after a page that appended something, and after a complete round (``settle``,
the mutation journal's hook the app passes in; see gateway/mutations/settling.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

import structlog
from multidict import MultiDict
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.config import Config
from gateway.domain.objects import Credential, Sync
from gateway.errors import GatewayError, InternalError, NotFound, RateLimited
from gateway.observability.metrics import Metrics
from gateway.pacing.adaptive import MAX_PAUSE
from gateway.pacing.api import Pacer, current_share
from gateway.pacing.scheduler import Priority
from gateway.pacing.scheduler import Share as PacingShare
from gateway.providers import translator as translator_for
from gateway.providers.base import Target
from gateway.providers.capture import capture as capture_for
from gateway.providers.capture.base import Capture, CaptureError, Cursor, Page
from gateway.store.db import utcnow
from gateway.store.objects import Objects
from gateway.store.syncs import advance
from gateway.stream.events import append_changes, last_known, live_ids
from gateway.stream.service import Stream
from gateway.syncs import reconcile
from gateway.syncs.share import DEFAULT_MAX_SHARE, Share, crowded
from gateway.upstream.client import UpstreamClient
from gateway.upstream.response import UpstreamResult, refusal

log = structlog.get_logger(__name__)
DEFAULT_POLL_INTERVAL = 10.0
MAX_BACKOFF = 300.0
AHEAD = 4  # pages read ahead of their commit (at most; the reader waits for the commits to catch up)
# Sync traffic is paced as priority "low" under the sync's own tenant, so users' calls always go first.
PRIORITY: Priority = "low"


class SettleUnknown(Protocol):
    """Settle the collection's unknown creates from the stream in ``conn``'s transaction; how many."""

    def __call__(
        self, conn: AsyncConnection, sync_id: str, collection_id: str, *, complete_since: datetime | None = None
    ) -> Awaitable[int]: ...


class Superseded(Exception):
    """Someone else moved the cursor since we read it: re-read the sync."""


@dataclass(frozen=True)
class Reading:
    """One collection of the sync being read."""

    collection: str
    provider: str
    capture: Capture
    target: Target


def option(sync: Sync, name: str, default: float) -> float:
    """A numeric option, in range: the store checks the stored options on every read (``stored_options``)."""
    return float(sync.options.get(name, default))


class SyncPoller:
    """Reads one sync until ``stop`` is set, it is paused or deleted, or it has nothing to read."""

    def __init__(
        self,
        sync_id: str,
        *,
        objects: Objects,
        stream: Stream,
        client: UpstreamClient,
        pacer: Pacer,
        metrics: Metrics,
        config: Config,
        settle: SettleUnknown | None = None,
    ) -> None:
        self.sync_id = sync_id
        self.stream = stream
        self.objects, self.client, self.pacer, self.metrics, self.config = objects, client, pacer, metrics, config
        self.settle = settle
        self.stop = asyncio.Event()
        self.wake = asyncio.Event()
        self.share = Share()
        self._scans: dict[str, set[str]] = {}  # collection -> ids shown by the full scan in progress

    async def run(self) -> None:
        current_share.set(PacingShare(priority=PRIORITY, tenant=f"sync:{self.sync_id}"))  # this task's calls
        failures = 0
        while not self.stop.is_set():
            try:
                sync = await self.objects.sync(self.sync_id)
            except NotFound:
                return
            except (SQLAlchemyError, OSError) as exc:
                failures += 1
                log.warning("sync_store_error", sync=self.sync_id, error=exc.__class__.__name__)
                await self._sleep(_backoff(failures))
                continue
            if sync.paused or not readings(sync):
                return
            try:
                await self._round(sync)
            except Superseded:
                self._scans.clear()
                continue
            except RateLimited as exc:
                await self._throttled(sync, exc)
                continue
            except (GatewayError, CaptureError, SQLAlchemyError, OSError) as exc:
                failures += 1
                await self._failed(sync, exc)
                await self._sleep(_backoff(failures))
                continue
            failures = 0
            await self._sleep(option(sync, "poll_interval", DEFAULT_POLL_INTERVAL))

    async def _sleep(self, seconds: float) -> None:
        waiters = [asyncio.ensure_future(e.wait()) for e in (self.stop, self.wake)]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        self.wake.clear()

    async def _failed(self, sync: Sync, exc: Exception) -> None:
        message = _message(exc)
        log.warning("sync_poll_failed", sync=sync.id, error=message)
        with contextlib.suppress(SQLAlchemyError, OSError):  # if the store failed, the log line is all we have
            await self.objects.set_sync_failing(sync.id, message)

    async def _throttled(self, sync: Sync, exc: RateLimited) -> None:
        """Wait exactly as long as the refusal said (1 s to a day), shown as ``throttled_until``."""
        wait = min(max(exc.retry_after, 1.0), MAX_PAUSE)
        log.info("sync_throttled", sync=sync.id, seconds=round(wait, 3), error=exc.message)
        reading = _reading_state(sync, sync.cursor)
        with contextlib.suppress(SQLAlchemyError, OSError):  # if the store failed, the log line is all we have
            await self.objects.set_sync_throttled(sync.id, utcnow() + timedelta(seconds=wait), reading)
        await self._sleep(wait)

    async def _round(self, sync: Sync) -> None:
        """Read every collection until caught up, then note the round's start as caught up."""
        started = utcnow()
        cursors = {c: sync.cursor[c] for c in sync.collections if c in sync.cursor}
        progress = {c: n for c, n in sync.progress.items() if c in sync.collections}
        generation = sync.generation
        for reading in readings(sync):
            cursor = cursors.get(reading.collection) or reading.capture.start(started)

            def fetch(cursor: Cursor, reading: Reading = reading) -> Awaitable[Page]:
                return self._fetch(sync, reading, cursor)

            pages = _Ahead(fetch, cursor)
            try:
                while not self.stop.is_set():
                    batch = await pages.next()
                    page = batch[-1][1]
                    cursors[reading.collection] = page.cursor
                    if backfilled := sum(p.backfilled for _, p in batch):
                        progress[reading.collection] = progress.get(reading.collection, 0) + backfilled
                    generation = await self._commit(sync, reading, batch, generation, cursors, progress)
                    if page.caught_up:
                        break
                    if page.scan_complete:  # the next scan's first page is asked for once this one's deletes are in
                        pages.close()
                        pages = _Ahead(fetch, page.cursor)
            finally:
                pages.close()
        if self.stop.is_set():
            return
        async with self.objects.engine.begin() as conn:
            done = await advance(
                conn, sync.id, generation, cursor=cursors, progress=progress, state="live", caught_up_at=started
            )
            if done is None:
                raise Superseded
            if self.settle is not None:
                for reading in readings(sync):
                    await self.settle(conn, sync.id, reading.collection, complete_since=started)

    async def _fetch(self, sync: Sync, reading: Reading, cursor: Cursor) -> Page:
        """One page through the upstream client; a refusal becomes the provider's error.

        The credential is the client's cached one, per page: a change (a rotated key, another base URL or
        limit) reaches a round (a whole backfill is one) within the cache's bound, as it reaches any call."""
        credential = await self.client.credentials.credential(sync.credential_id)
        call = reading.capture.request(cursor, reading.target)
        await self._space(sync, credential)
        outcome = "error"
        try:
            answer = await self._send(credential, call.method, call.path, call.json, call.query)
            if 200 <= answer.status < 300:
                page = reading.capture.page(cursor, answer.body_json)
                outcome = "ok"
                return page
            retry = reading.capture.recover(cursor, answer.status, answer.body_json)
            if retry is not None:
                outcome = "ok"
                return Page([], retry)
            raise _refusal(reading.provider, answer)
        finally:
            self.metrics.sync_polls.labels(reading.provider, outcome).inc()

    async def _space(self, sync: Sync, credential: Credential) -> None:
        """``max_share``: while other calls wait for this credential (on any replica), keep to that share."""
        interval = Share.interval(self.config, credential, option(sync, "max_share", DEFAULT_MAX_SHARE))
        self.share.wait_if(await crowded(self.pacer, credential), interval)
        await self.share.pending()

    async def _send(
        self, credential: Credential, method: str, path: str, json: object, query: Sequence[tuple[str, str]] | None
    ) -> UpstreamResult:
        """THE call site of sync traffic: the same upstream entry point as the proxy and mutations.

        The pacing class and tenant come from the task's ``current_share``, set once in ``run``.
        """
        return await self.client.request_json(
            credential, method, path.lstrip("/"), json=json, query=None if query is None else MultiDict(query)
        )

    async def _commit(
        self,
        sync: Sync,
        reading: Reading,
        batch: Sequence[tuple[Cursor, Page]],
        generation: int,
        cursors: dict[str, Cursor],
        progress: dict[str, int],
    ) -> int:
        """The pages (each with the cursor it was read at) and the cursor after the last, in one
        transaction; the new generation. Only the last page can be caught up or complete a scan."""
        for asked, each in batch:  # the pages of a full scan are tallied as they commit
            if reading.capture.scan_start(asked):
                self._scans[reading.collection] = set()
            if (tally := self._scans.get(reading.collection)) is not None:
                tally.update(s.upstream_id for s in each.seen)
        page = batch[-1][1]
        scan = self._scans.get(reading.collection)
        state = _reading_state(sync, cursors)
        async with self.stream.transaction() as tx:
            conn = tx.conn
            new = await advance(conn, sync.id, generation, cursor=cursors, progress=progress, state=state)
            if new is None:
                raise Superseded
            consumers = await self.objects.all_consumers(conn)
            seen = [sighting for _, each in batch for sighting in each.seen]
            if page.scan_complete and scan is not None:
                seen += reconcile.missing(scan, await live_ids(conn, sync.id, reading.collection))
            known = await last_known(conn, sync.id, reading.collection, [s.upstream_id for s in seen])
            changes = reconcile.changes(seen, known)
            await append_changes(
                tx,
                sync_id=sync.id,
                collection_id=reading.collection,
                changes=changes,
                consumers=consumers,
                known=known,
            )
            if changes and self.settle is not None:
                await self.settle(conn, sync.id, reading.collection)
        if page.scan_complete:
            self._scans.pop(reading.collection, None)
        for action, count in Counter(change.action for change in changes).items():  # the events, per action
            self.metrics.sync_events.labels(reading.provider, action).inc(count)
        return new


def readings(sync: Sync) -> list[Reading]:
    """What the sync reads: nothing when this version refuses its stored options (``options_error``)."""
    if sync.options_error is not None:
        return []
    readings = []
    for collection in sync.collections:
        provider, _, obj = collection.partition(":")
        capture = capture_for(provider)
        if capture is not None:
            readings.append(Reading(collection, provider, capture, Target(obj=obj, options=sync.options, seed="")))
    return readings


class _Ahead:
    """One collection's pages in order, read by a task of their own up to ``AHEAD`` before their commit.

    The reader stops after an error (handed on in its place, so the pages before it still commit), a
    caught-up page, and a page that completes a scan. ``close`` drops what nobody will commit: those
    pages are read again from the stored cursor, as after a crash.
    """

    def __init__(self, fetch: Callable[[Cursor], Awaitable[Page]], cursor: Cursor) -> None:
        self._pages: asyncio.Queue[tuple[Cursor, Page] | Exception] = asyncio.Queue(AHEAD)
        self._failed: Exception | None = None
        self._task = asyncio.ensure_future(self._read(fetch, cursor))  # copies the caller's pacing share

    async def _read(self, fetch: Callable[[Cursor], Awaitable[Page]], cursor: Cursor) -> None:
        while True:
            try:
                page = await fetch(cursor)
            except Exception as exc:  # the committing side raises it, after the pages read before it
                await self._pages.put(exc)
                return
            await self._pages.put((cursor, page))
            if page.caught_up or page.scan_complete:
                return
            cursor = page.cursor

    async def next(self) -> list[tuple[Cursor, Page]]:
        """The pages read since the last call (waits for one), in order, each with the cursor it was read at.

        A failed read ends the list; it is raised by the next call, or by this one if it came first.
        """
        if self._failed is not None:
            raise self._failed
        items = [await self._first()]
        while not self._pages.empty():
            items.append(self._pages.get_nowait())
        pages: list[tuple[Cursor, Page]] = []
        for item in items:
            if isinstance(item, Exception):
                if not pages:
                    raise item
                self._failed = item
                break
            pages.append(item)
        return pages

    async def _first(self) -> tuple[Cursor, Page] | Exception:
        """The next item, or an error if the reader ended without one: a fetch that died of a
        cancellation it did not ask for (any BaseException) would otherwise leave the committer waiting
        for ever, its sync never read again while its lease stays renewed."""
        if not self._pages.empty():
            return self._pages.get_nowait()
        getting = asyncio.ensure_future(self._pages.get())
        await asyncio.wait((getting, self._task), return_when=asyncio.FIRST_COMPLETED)
        if getting.done():
            return getting.result()
        getting.cancel()
        ended = "cancelled" if self._task.cancelled() else repr(self._task.exception())
        return InternalError(f"reading the next page stopped without an answer ({ended})")

    def close(self) -> None:
        self._task.cancel()


def _refusal(provider: str, answer: UpstreamResult) -> GatewayError:
    """The provider's error for a non-2xx page (``upstream.response.refusal``)."""
    translator = translator_for(provider)
    assert translator is not None  # every provider with a capture has a translator
    return refusal(translator, answer)


def _reading_state(sync: Sync, cursors: dict[str, Cursor]) -> str:
    """``backfilling`` until every collection's cursor is live, then ``live``."""
    backfilling = any(cursors.get(c) is None or cursors[c].get("phase") != "live" for c in sync.collections)
    return "backfilling" if backfilling else "live"


def _backoff(failures: int) -> float:
    """Exponential with jitter."""
    return float(min(MAX_BACKOFF, 2 ** min(failures, 10)) * random.uniform(0.5, 1.0))


def _message(exc: Exception) -> str:
    if isinstance(exc, GatewayError):
        return str(exc)
    if isinstance(exc, CaptureError):
        return f"the upstream answered a page the gateway cannot read: {exc}"
    return f"store error: {exc.__class__.__name__}"
