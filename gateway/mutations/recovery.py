"""Recovery: settle every mutation a replica left unfinished, so the stream holds what the upstream did.

Every replica holds a lease of its own (``mutations:<replica>``, renewed every ``ttl/3``) that its
journal rows carry, and looks for orphans every ``ttl/3`` seconds (at start, and at once when its own
run hands one over): rows whose lease lapsed (the replica died; ``ttl`` <= 30 s) or that its own runs
gave up. One replica adopts each row (compare-and-set on the lease), then, from the first chunk not
settled in the stream (``progress``):

- Stripe: the remaining writes are sent again with the same derived ``Idempotency-Key``s; Stripe
  answers a write it already applied with the same object, so nothing is applied twice. The key then
  answers 200 as if the run had finished.
- a run that failed in the gateway after the upstream answered noted the ids it confirmed
  (``written``): those are read back and appended; the key answers 200 if nothing was left unsent.
- updates and deletes elsewhere: the chunk that may have been applied is read back by id and its
  current state appended (a record gone is a delete); later chunks were never sent. The key answers
  500 ``mutation_interrupted`` with the ``records`` now in the stream.
- creates elsewhere (HubSpot, Salesforce, Airtable cannot be asked whether a create happened): the row
  turns ``unknown`` and the key answers 409 ``mutation_outcome_unknown`` until the sync's change
  capture settles it (``journal.resolve_unknown``); never silently sent again.

A recovery that fails for a transient reason (upstream down, rate limited) is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from sqlalchemy.exc import SQLAlchemyError

from gateway.errors import (
    BackendUnavailable,
    GatewayError,
    MutationInterrupted,
    NotFound,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.mutations.journal import UNKNOWN, Entry, Journal
from gateway.mutations.models import BY_KIND, Mutation
from gateway.mutations.service import MutationService, Run
from gateway.providers.base import Item, UpstreamRecord, Written
from gateway.store.leases import Leases
from gateway.stream.events import RecordChange, last_known

log = structlog.get_logger(__name__)
TRANSIENT = (RateLimited, UpstreamUnavailable, UpstreamTimeout, UpstreamAuthFailed, BackendUnavailable)
RETRY_FIRST, RETRY_MAX = 1.0, 300.0


def mutation_of(entry: Entry) -> Mutation:
    """The request the journal row recorded, as the service's model (it passed validation once)."""
    base: dict[str, Any] = {"kind": entry.kind, "sync_id": entry.sync_id, "collection_id": entry.collection_id}
    if entry.kind == "delete":
        base["upstream_ids"] = [item.upstream_id for item in entry.items]
    elif entry.kind == "update":
        base["records"] = [{"upstream_id": item.upstream_id, "data": item.data} for item in entry.items]
    else:
        base["records"] = [{"data": item.data} for item in entry.items]
    mutation: Mutation = BY_KIND[entry.kind].model_validate(base)
    return mutation


class Recovery:
    """This replica's lease keeper and recoverer; an aiohttp cleanup context (``context``)."""

    def __init__(self, journal: Journal, service: Callable[[], MutationService], *, ttl: float) -> None:
        self.journal = journal
        self.service = service
        self.ttl = ttl
        self.leases = Leases(journal.engine, journal.lease, ttl=ttl)
        self._stop = asyncio.Event()
        self._retry: dict[str, tuple[float, float]] = {}  # mutation id -> (not before, last delay)

    async def context(self, _app: object) -> AsyncIterator[None]:
        """Hold the lease before serving (new rows carry it); release it last, so others take over at once."""
        await self.leases.acquire(self.journal.lease)
        tasks = [
            asyncio.create_task(self._renew(), name="journal-lease"),
            asyncio.create_task(self._recover_loop(), name="journal-recovery"),
        ]
        try:
            yield
        finally:
            self._stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(SQLAlchemyError, OSError):
                await self.leases.release_all()

    async def _renew(self) -> None:
        while not self._stop.is_set():
            try:
                await self.leases.acquire(self.journal.lease)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("journal_lease_renewal_failed", error=exc.__class__.__name__)
            await _sleep(self._stop, self.ttl / 3)

    async def _recover_loop(self) -> None:
        while not self._stop.is_set():
            self.journal.wake.clear()
            try:
                await self.tick()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("journal_recovery_tick_failed", error=exc.__class__.__name__)
            except Exception:  # a bug must not stop recovery for good: log it and look again later
                log.exception("journal_recovery_tick_crashed")
            await _sleep(self.journal.wake, self.ttl / 3)

    async def tick(self) -> int:
        """Adopt and settle every orphan due now; how many were settled."""
        settled = 0
        for entry in await self.journal.orphans():
            if self._retry.get(entry.id, (0.0, 0.0))[0] > time.monotonic():
                continue
            if not await self.journal.adopt(entry):
                continue  # another replica took it
            try:
                await self.recover(entry)
            except Exception as exc:  # any failure: note it, retry with backoff
                self._backoff(entry, exc)
                continue
            self._retry.pop(entry.id, None)
            settled += 1
        return settled

    def _backoff(self, entry: Entry, exc: Exception) -> None:
        delay = min(RETRY_MAX, self._retry.get(entry.id, (0.0, RETRY_FIRST / 2))[1] * 2)
        self._retry[entry.id] = (time.monotonic() + delay, delay)
        detail = exc.message if isinstance(exc, GatewayError) else exc.__class__.__name__
        log.warning("mutation_recovery_failed", mutation_id=entry.id, error=detail, retry_in=delay)
        if not isinstance(exc, TRANSIENT):
            log.error("mutation_recovery_error", mutation_id=entry.id, exc_info=exc)

    async def recover(self, entry: Entry) -> None:
        """Settle one adopted row (see the module docstring); raises to be retried later."""
        service = self.service()
        plan = await service.prepare(mutation_of(entry))
        run = Run(plan, service.target(plan, entry.seed), key=entry.key, journal_id=entry.id, progress=entry.progress)
        async with service.engine.connect() as conn:
            known = await last_known(conn, entry.sync_id, entry.collection_id, entry.applied)
        run.records = [known[i] for i in entry.applied if i in known]
        log.info("mutation_recovering", mutation_id=entry.id, kind=entry.kind, provider=plan.provider)
        if run.progress >= len(entry.items):
            await service.finish(run, 200, {"records": [r.model_dump(mode="json") for r in run.records]})
        elif plan.translator.replays_writes:
            await self._replay(service, run)
        elif entry.written is not None:
            await self._confirmed(service, run, entry.written)
        elif entry.kind == "create":
            sent = len(next(service.remaining(run)))
            await self.journal.mark(entry.id, state=UNKNOWN, detail=_unknown_detail(plan.translator.name, sent))
            log.warning("mutation_outcome_unknown", mutation_id=entry.id, provider=plan.provider)
            return
        else:
            await self._read_back(service, run)
        log.info("mutation_recovered", mutation_id=entry.id, records=len(run.records))

    async def _replay(self, service: MutationService, run: Run) -> None:
        """Send the remaining writes again under their derived keys; a delete of a gone record counts."""
        try:
            for chunk in service.remaining(run):
                try:
                    await service.apply(run, chunk)
                except NotFound:
                    if run.plan.mutation.kind != "delete":
                        raise
                    gone = [RecordChange(upstream_id=str(i.upstream_id), action="delete", data=None) for i in chunk]
                    await service.commit(run, len(chunk), gone)
        except TRANSIENT:
            raise
        except GatewayError as exc:  # the upstream refuses it now as it would have then: that is the answer
            if run.records:
                exc.extra["records"] = [r.model_dump(mode="json") for r in run.records]
            await service.finish(run, exc.status, exc.body())
            return
        await service.finish(run, 200, {"records": [r.model_dump(mode="json") for r in run.records]})

    async def _read_back(self, service: MutationService, run: Run) -> None:
        """Append the current state of the chunk that may have been applied; later ones were never sent."""
        chunk = next(service.remaining(run))
        ids = [str(item.upstream_id) for item in chunk]
        rows = await _read(service, run, ids)
        if run.plan.mutation.kind == "update":
            written = Written(ids=[i for i in ids if i in rows], records=list(rows.values()))
        else:
            written = Written(ids=[i for i in ids if i not in rows])
        await self._settle(service, run, chunk, written, certain=False)

    async def _confirmed(self, service: MutationService, run: Run, ids: list[str]) -> None:
        """The failed run had the upstream's answer for its chunk: append exactly those ids, read back."""
        chunk = next(service.remaining(run))
        rows = await _read(service, run, ids) if run.plan.mutation.kind != "delete" else {}
        await self._settle(service, run, chunk, Written(ids=ids, records=list(rows.values())), certain=True)

    async def _settle(
        self, service: MutationService, run: Run, chunk: list[Item], written: Written, *, certain: bool
    ) -> None:
        """Append the chunk's changes, then answer: 200 if the whole mutation is known applied."""
        changes, _ = await service.changes(run, chunk, written)
        await service.commit(run, len(chunk), changes)
        records = [r.model_dump(mode="json") for r in run.records]
        unsent = len(run.plan.items()) - run.progress
        if certain and not unsent:
            await service.finish(run, 200, {"records": records})
            return
        how = "appended what the upstream confirmed" if certain else "read back the records it may have changed"
        error = MutationInterrupted(
            f"Error: the mutation was interrupted; recovery {how} to the stream (`records`); "
            f"{unsent} records after them were not sent",
            records=records,
            recovery="recovered",
            mutation_id=run.journal_id,
        )
        await service.finish(run, error.status, error.body())


async def _read(service: MutationService, run: Run, ids: list[str]) -> dict[str, UpstreamRecord]:
    """Those records as the upstream has them now; missing ones are absent."""
    plan = run.plan
    fields = sorted({f for item in plan.items() for f in item.data})
    rows: dict[str, UpstreamRecord] = {}
    for call in plan.translator.reads(ids, fields, run.target):
        try:
            answer = await service.send(plan, call)
        except NotFound:
            continue
        rows.update({row.upstream_id: row for row in plan.translator.fetched(answer.body_json)})
    return rows


def _unknown_detail(provider: str, count: int) -> str:
    return (
        f"the gateway stopped after sending {count} creates to {provider}, which cannot be asked whether it "
        "applied them; the sync's change capture settles it (until then this key answers 409)."
    )


async def _sleep(wake: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), seconds)
