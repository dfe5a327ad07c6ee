"""Running a mutation: validate -> translate -> paced upstream calls -> stream -> await consumers.

Records go upstream in the translator's chunks, one chunk at a time, through the same upstream client
as proxied calls (so they are paced and authenticated alike). After each chunk the applied records are
appended to the stream, in one transaction with their last known state and the journal's progress,
before the next chunk is sent (``gateway.mutations.journal``: the intent is committed before the first
write, so a crash in between is recovered). A failure stops the run and its error carries the
``records`` already applied (they are in the stream too; an upstream refusal carries them even when
none were). A failure that is not the gateway's own (a bug, the store failing) after a write hands the
run to recovery and answers 500 with the ``records`` applied so far; a write that timed out (the
upstream may still apply it) is handed to recovery too, and answers 504. Where the upstream offers
all-or-none a refused chunk applied nothing: Salesforce's chunk is a whole mutation of up to 1,000
records, sent as one all-or-none Composite call. ``execute`` wraps a run in Idempotency-Key handling.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog
from multidict import MultiDict
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain.models import Event, Record, display_name
from gateway.domain.objects import Consumer, Credential
from gateway.errors import (
    Conflict,
    ConsumerTimeout,
    GatewayError,
    InternalError,
    InvalidRequest,
    NotFound,
    UpstreamAnswerUnreadable,
    UpstreamTimeout,
    UpstreamValidationError,
)
from gateway.mutations.idempotency import IdempotencyKeys
from gateway.mutations.journal import Journal
from gateway.mutations.models import DeleteMutation, Mutation, MutationResponse, UpdateMutation
from gateway.observability.metrics import Metrics
from gateway.providers import translator as translator_for
from gateway.providers.base import Call, Item, Query, Target, Translator, UpstreamRecord, Written
from gateway.store.objects import Objects
from gateway.stream.events import RecordChange, append_changes, last_known
from gateway.stream.service import Stream
from gateway.upstream.cache import CredentialCache
from gateway.upstream.response import Answer, refusal

log = structlog.get_logger(__name__)
_ACTIONS: dict[str, Literal["insert", "update", "delete"]] = {
    "create": "insert",
    "update": "update",
    "delete": "delete",
}


class UpstreamAnswer(Answer, Protocol):
    """What the service reads of an upstream answer: what ``refusal`` reads, and the wait and readability."""

    @property
    def pacing_wait(self) -> float: ...
    @property
    def readable(self) -> bool: ...


# The pacing waits (seconds) of the upstream calls a request's mutation made, for its request line and
# console row; set by the HTTP view in the request's task, None elsewhere (recovery, tests).
PACING_WAITS: ContextVar[list[float] | None] = ContextVar("mutation_pacing_waits", default=None)


class Upstream(Protocol):
    """The part of ``upstream.client.UpstreamClient`` mutations use: its credential cache and one paced,
    authenticated JSON exchange."""

    @property
    def credentials(self) -> CredentialCache: ...

    async def request_json(
        self,
        credential: Credential,
        method: str,
        path: str,
        *,
        json: Any = None,
        form: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamAnswer: ...


@dataclass(frozen=True)
class Plan:
    """A mutation with everything it needs resolved; built before anything is written."""

    mutation: Mutation
    credential: Credential
    translator: Translator
    provider: str
    obj: str
    options: Mapping[str, str]
    consumers: tuple[Consumer, ...]

    def items(self) -> list[Item]:
        m = self.mutation
        if isinstance(m, DeleteMutation):
            return [Item(i, upstream_id, {}) for i, upstream_id in enumerate(m.upstream_ids)]
        if isinstance(m, UpdateMutation):
            return [Item(i, r.upstream_id, r.data) for i, r in enumerate(m.records)]
        return [Item(i, None, r.data) for i, r in enumerate(m.records)]


@dataclass
class Run:
    """One run's progress: its journal row, the items settled in the stream, the chunk in flight."""

    plan: Plan
    target: Target
    key: str | None = None
    journal_id: str | None = None  # set just before the first upstream write
    progress: int = 0  # items[:progress] are settled in the stream
    records: list[Record] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    in_flight: list[RecordChange] = field(default_factory=list)  # applied upstream, not yet in the stream
    uncertain: bool = False  # a write timed out: the upstream may apply it still; recovery settles it
    confirmed: list[str] | None = None  # ids the upstream's answer confirmed for the chunk in flight

    def add(self, events: Sequence[Event]) -> None:
        self.records.extend(e.record for e in events)
        self.seqs.extend(e.seq for e in events)

    def applied(self) -> list[dict[str, Any]]:
        """Every record known applied, as JSON: those in the stream, then those still in flight."""
        plan = self.plan.mutation
        pending = [
            {
                "sync_id": plan.sync_id,
                "collection_id": plan.collection_id,
                "upstream_id": change.upstream_id,
                "upstream_updated_at": change.upstream_updated_at.isoformat() if change.upstream_updated_at else None,
                "data": change.data or {},
                "deleted": change.action == "delete",
                "inserted_at": None,  # not in the stream yet
                "updated_at": None,
            }
            for change in self.in_flight
        ]
        return [r.model_dump(mode="json") for r in self.records] + pending


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool = False


class MutationService:
    def __init__(
        self,
        *,
        engine: AsyncEngine,
        objects: Objects,
        client: Upstream,
        stream: Stream,
        metrics: Metrics,
        keys: IdempotencyKeys,
        journal: Journal,
    ) -> None:
        self.engine = engine
        self.objects = objects
        self.client = client
        self.stream = stream
        self.metrics = metrics
        self.keys = keys
        self.journal = journal

    async def execute(self, mutation: Mutation, *, key: str | None, fingerprint: str) -> Outcome:
        """Run ``mutation``, or replay the answer stored under ``key`` (already scoped to the token)."""
        plan = await self.prepare(mutation)
        if key is not None:
            stored = await self.keys.claim(key, fingerprint)
            if stored is not None:
                return Outcome(stored.status, stored.body, replayed=True)
        run = Run(plan, self.target(plan, key or uuid.uuid4().hex), key=key)
        try:
            body = await self.run(run)
        except GatewayError as exc:
            await self._settle_failure(run, exc)
            raise
        except Exception as exc:
            if run.journal_id is None:
                await self._release(run)
                raise
            raise await self._hand_over(run, exc) from exc
        except BaseException:  # cancelled: before a write, forget it; after, recovery finishes it
            if run.journal_id is None:
                await self._release(run)
            else:
                self.journal.hand_over(run.journal_id)
            raise
        await self.finish(run, 200, body)
        return Outcome(200, body)

    async def finish(self, run: Run, status: int, body: dict[str, Any]) -> None:
        """Store the answer under the key and close the journal row, in one transaction."""
        if run.journal_id is not None:
            await self.journal.finish(run.journal_id, run.key, status, body)
        elif run.key is not None:
            await self.keys.complete(run.key, status, body)

    async def _settle_failure(self, run: Run, exc: GatewayError) -> None:
        if run.uncertain and run.journal_id is not None:  # recovery finds out, then answers the key
            self.journal.hand_over(run.journal_id, late_writes=True)
            exc.extra.update(records=run.applied(), recovery="pending", mutation_id=run.journal_id)
            return
        if run.journal_id is not None and not (exc.status in (429, 503) and not run.records):
            await self.finish(run, exc.status, exc.body())
            return
        if run.journal_id is not None:  # refused before anything was applied upstream
            await self.journal.abandon(run.journal_id)
        await self._release(run)

    async def _release(self, run: Run) -> None:
        """Nothing was written upstream: a retry with the key may run the mutation."""
        if run.key is not None:
            await self.keys.release(run.key)

    async def _hand_over(self, run: Run, exc: Exception) -> GatewayError:
        """A foreign failure after a write: recovery settles the run; the client learns what was applied."""
        assert run.journal_id is not None
        if run.confirmed is not None:
            await self.journal.note_written(run.journal_id, run.confirmed)
        self.journal.hand_over(run.journal_id)
        log.error("mutation_failed_after_write", mutation_id=run.journal_id, error=exc.__class__.__name__, exc_info=exc)
        return InternalError(
            "Error: the mutation failed after the upstream applied changes; the gateway is recovering them "
            "into the stream (the Idempotency-Key, if any, answers once that is done)",
            records=run.applied(),
            recovery="pending",
            mutation_id=run.journal_id,
        )

    async def prepare(self, mutation: Mutation) -> Plan:
        """Resolve the sync, collection, credential and awaited consumers; 404/400 before any write."""
        sync = await self.objects.sync(mutation.sync_id)
        if sync.options_error is not None:
            raise Conflict(f"sync {sync.id!r}: {sync.options_error}", field="options")
        collection = mutation.collection_id
        if collection not in sync.collections:
            raise NotFound(f"collection {collection!r} is not part of sync {sync.id!r}", field="collection_id")
        provider, _, obj = collection.partition(":")
        translator = translator_for(provider)
        if translator is None:
            raise InvalidRequest(f"collection_id: {provider!r} collections cannot be mutated", field="collection_id")
        credential = await self.client.credentials.credential(sync.credential_id)
        consumers = tuple(await self.objects.all_consumers())
        unknown = sorted(set(mutation.await_consumer_ids) - {c.id for c in consumers})
        if unknown:
            names = ", ".join(repr(c) for c in unknown)
            raise NotFound(f"consumer {names} not found", field="await_consumer_ids")
        return Plan(mutation, credential, translator, provider, obj, sync.options, consumers)

    def target(self, plan: Plan, seed: str) -> Target:
        return Target(obj=plan.obj, options=plan.options, seed=seed)

    async def run(self, run: Run) -> dict[str, Any]:
        """Apply every chunk not settled yet, then await consumers; the answer body in request order."""
        kind, provider = run.plan.mutation.kind, run.plan.provider
        outcome = "internal_error"
        try:
            for chunk in self.remaining(run):
                await self.apply(run, chunk)
            await self._await_consumers(run)
            outcome = "ok"
        except GatewayError as exc:
            outcome = exc.code
            # An upstream refusal says for sure what was applied, so it lists it even when it is nothing.
            if run.records or (run.journal_id and isinstance(exc, UpstreamValidationError)):
                exc.extra["records"] = [r.model_dump(mode="json") for r in run.records]
            raise
        finally:
            self.metrics.mutations.labels(kind, provider, outcome).inc()
            if run.records:
                self.metrics.mutation_records.labels(kind, provider).inc(len(run.records))
        return MutationResponse(records=run.records).model_dump(mode="json")

    def remaining(self, run: Run) -> Iterator[list[Item]]:
        """The chunks from ``run.progress`` on, in the translator's size."""
        items = run.plan.items()
        size = run.plan.translator.chunk_size(run.plan.mutation.kind)
        for start in range(run.progress, len(items), size):
            yield items[start : start + size]

    async def apply(self, run: Run, chunk: list[Item]) -> None:
        """One write call, its read-back, one stream transaction; raises the chunk's failure after."""
        plan, kind = run.plan, run.plan.mutation.kind
        call = plan.translator.write(kind, chunk, run.target)
        if run.journal_id is None:  # the intent is durable before the first write leaves
            m = plan.mutation
            run.journal_id = await self.journal.open(
                sync_id=m.sync_id, collection_id=m.collection_id, kind=kind, items=plan.items(),
                seed=run.target.seed, key=run.key,
            )  # fmt: skip
        try:
            answer = await self.send(plan, call)
        except (UpstreamTimeout, UpstreamAnswerUnreadable):  # it may have been applied: recovery finds out
            run.uncertain = True
            raise
        written = plan.translator.written(kind, chunk, answer.body_json)
        run.confirmed = list(written.ids)
        run.in_flight = [RecordChange(upstream_id=i, action=_ACTIONS[kind], data=None) for i in written.ids]
        changes, read_failure = await self.changes(run, chunk, written) if written.ids else ([], None)
        run.in_flight = changes
        await self.commit(run, len(chunk), changes)
        failure = written.failure or read_failure
        if failure is not None:
            raise failure

    async def commit(self, run: Run, settled: int, changes: list[RecordChange]) -> None:
        """The chunk's events and the journal's progress past it, in one transaction."""
        plan = run.plan
        assert run.journal_id is not None
        async with self.stream.transaction() as tx:
            events = await append_changes(
                tx,
                sync_id=plan.mutation.sync_id,
                collection_id=plan.mutation.collection_id,
                changes=changes,
                consumers=plan.consumers,
            )
            applied = [r.upstream_id for r in run.records] + [e.record.upstream_id for e in events]
            await self.journal.advance(tx.conn, run.journal_id, run.progress + settled, applied)
        run.add(events)
        run.progress += settled
        run.in_flight, run.confirmed = [], None

    async def changes(
        self, run: Run, chunk: list[Item], written: Written
    ) -> tuple[list[RecordChange], GatewayError | None]:
        """The stream changes of a written chunk: full records read back, merged over the last known.

        If the read-back fails the write still happened, so the change is recorded with what is known
        (last known data with the written fields on top) and the read-back's error is reported.
        """
        plan, kind = run.plan, run.plan.mutation.kind
        action = _ACTIONS[kind]
        if kind == "delete":
            return [RecordChange(upstream_id=i, action=action, data=None) for i in written.ids], None
        sent = _sent_data(chunk, written.ids)
        known: dict[str, dict[str, Any]] = {}
        if kind == "update":
            async with self.engine.connect() as conn:
                stored = await last_known(conn, plan.mutation.sync_id, plan.mutation.collection_id, written.ids)
            known = {upstream_id: dict(record.data) for upstream_id, record in stored.items()}
        fetched, failure = written.records, None
        if fetched is None:
            fields = sorted({f for data in [*sent.values(), *known.values()] for f in data})
            call = plan.translator.fetch(written.ids, fields, run.target)
            if call is not None:
                try:
                    fetched = plan.translator.fetched((await self.send(plan, call)).body_json)
                except GatewayError as exc:
                    failure = exc
        rows: dict[str, UpstreamRecord] = {r.upstream_id: r for r in fetched or []}
        changes = []
        for upstream_id in written.ids:
            row = rows.get(upstream_id)
            data = {**known.get(upstream_id, {}), **(row.data if row else sent.get(upstream_id, {}))}
            updated_at = row.upstream_updated_at if row else None
            changes.append(
                RecordChange(upstream_id=upstream_id, action=action, data=data, upstream_updated_at=updated_at)
            )
        return changes, failure

    async def send(self, plan: Plan, call: Call) -> UpstreamAnswer:
        answer = await self.client.request_json(
            plan.credential,
            call.method,
            call.path.lstrip("/"),
            json=call.json,
            form=_multi(call.form),
            query=_multi(call.query),
            headers=call.headers,
        )
        waits = PACING_WAITS.get()
        if waits is not None:
            waits.append(answer.pacing_wait)
        if not 200 <= answer.status < 300:
            raise refusal(plan.translator, answer)
        if not answer.readable:  # read as no records, an applied write was lost and a read-back all deletes
            name = display_name(plan.provider)
            raise UpstreamAnswerUnreadable(f"Error: {name} API answered {answer.status} with a body that is not JSON")
        return answer

    async def _await_consumers(self, run: Run) -> None:
        consumer_ids = run.plan.mutation.await_consumer_ids
        if not consumer_ids:
            return
        timeout = run.plan.mutation.await_consumers_timeout / 1000
        pending = await self.stream.await_consumers(consumer_ids, run.seqs, timeout)
        if pending:
            raise ConsumerTimeout("Error: Timed out waiting for consumers: " + ", ".join(pending), pending=pending)


def _multi(pairs: Query | None) -> MultiDict[str] | None:
    """Pairs as a mapping that keeps repeated names (Airtable's ``records[]``) when urlencoded."""
    return None if pairs is None else MultiDict(pairs)


def _sent_data(chunk: list[Item], ids: list[str]) -> dict[str, Mapping[str, Any]]:
    """What was written for each id: by position for creates (new ids), by id for updates."""
    if chunk and chunk[0].upstream_id is None:
        return {upstream_id: item.data for upstream_id, item in zip(ids, chunk, strict=False)}
    return {str(item.upstream_id): item.data for item in chunk}
