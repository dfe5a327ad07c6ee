"""The in-process cache of decrypted credentials and sync -> credential bindings: bounded, and kept
in step with the store across replicas.

Reading and decrypting a credential costs more than the rest of a proxied call, so a credential is
read once and then served from memory until the store says it changed. A time-to-live could not
do that: with calls spread over thousands of credentials, each one's entry expired before its next
call, and nearly every call paid the read (0.24x the one-credential throughput at 10,000).

How a change reaches every replica: every change and delete of a credential or a sync bumps a
counter in its own transaction (store/changes.py). Every ``CHECK_INTERVAL`` the cache reads the
counters; when the credentials' moved, it reads every credential's stamp (version, updated_at; no
decryption) and drops the entries whose row changed or is gone; when the syncs' moved, it forgets
every binding (they cost no decryption to read again). Entries are served only while the last
completed check started less than ``MAX_STALENESS`` ago: when the last one is older (the store or
the event loop was slow), the next call runs a check and every call waits for that one; if the
store is away, calls read it themselves and get its error. So a change or delete made through any
replica takes effect on every replica within ``MAX_STALENESS`` (2 s).

Bounded: at most ``size`` credentials and ``size`` bindings, least recently used dropped first.
Unknown ids are not cached, so a credential created a moment ago is found at once. Concurrent misses
of one id share one store read; a read that overlapped a check which dropped entries is used but
not kept (it may predate the change). OAuth2 refreshes in this process put the new credential directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import SQLAlchemyError

from gateway.domain.objects import Credential
from gateway.lru import LRU
from gateway.singleflight import SingleFlight
from gateway.store.credentials import Stamp
from gateway.store.objects import Objects

log = structlog.get_logger(__name__)
CHECK_INTERVAL = 1.0
MAX_STALENESS = 2.0
DEFAULT_SIZE = 16_384
STOP_WITHIN = 5.0  # seconds a check in progress gets to finish at shutdown before it is cancelled


@dataclass(frozen=True, slots=True)
class _Entry:
    credential: Credential
    stamp: Stamp | None  # None: put by a refresh here; dropped at the next change, then read again


class CredentialCache:
    def __init__(
        self,
        objects: Objects,
        *,
        size: int = DEFAULT_SIZE,
        clock: Callable[[], float] = time.monotonic,
        interval: float = CHECK_INTERVAL,
        max_staleness: float = MAX_STALENESS,
    ) -> None:
        self._objects = objects
        self._clock = clock
        self._interval = interval
        self._max_staleness = max_staleness
        self._credentials: LRU[str, _Entry] = LRU(size)
        self._syncs: LRU[str, str] = LRU(size)
        self._loads = SingleFlight()
        self._trusted_until = -math.inf  # nothing is served from memory before the first check
        self._generations: tuple[int, int] | None = None
        self._epoch = 0  # moves when a check drops entries: a read that overlapped it is not kept
        self._watcher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        """Stop checking. A check in progress finishes first: a store query cancelled halfway would
        leave the driver's thread answering an event loop that may be closed by then."""
        if self._watcher is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._watcher), STOP_WITHIN)
        except TimeoutError:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def __len__(self) -> int:
        return len(self._credentials)

    async def credential(self, credential_id: str) -> Credential:
        """The credential (``NotFound`` when unknown), as the store had it at most ``MAX_STALENESS`` ago."""
        trusted = self._clock() < self._trusted_until or await self._checked_now()
        entry = self._credentials.get(credential_id) if trusted else None
        if entry is not None:
            return entry.credential
        return await self._loads.run("credential:" + credential_id, lambda: self._load(credential_id))

    async def _checked_now(self) -> bool:
        """The last check is too old (the loop or the store was slow): run one, shared by every caller,
        rather than let each call read the store (which would slow the next check further)."""
        try:
            await self._loads.run("check", self.check)
        except (OSError, SQLAlchemyError):
            return False  # the caller reads the store itself, and gets its error
        return self._clock() < self._trusted_until

    async def _load(self, credential_id: str) -> Credential:
        epoch = self._epoch
        credential, stamp = await self._objects.stamped_credential(credential_id)
        if epoch == self._epoch:
            self._keep(_Entry(credential, stamp))
        return credential

    async def for_sync(self, sync_id: str) -> Credential:
        """The credential a sync is bound to (``NotFound`` when either is unknown)."""
        trusted = self._clock() < self._trusted_until or await self._checked_now()
        credential_id = self._syncs.get(sync_id) if trusted else None
        if credential_id is None:
            epoch = self._epoch
            sync = await self._loads.run("sync:" + sync_id, lambda: self._objects.sync(sync_id))
            credential_id = sync.credential_id
            if epoch == self._epoch:
                self._syncs.put(sync_id, credential_id)
        return await self.credential(credential_id)

    def clear(self) -> None:
        """Forget everything (a reload changed declared credentials): the next call reads the store."""
        self._credentials.clear()
        self._syncs.clear()
        self._epoch += 1

    def put(self, credential: Credential) -> None:
        """Remember a credential this process refreshed, unless a newer version is cached already."""
        self._keep(_Entry(credential, None))

    def _keep(self, entry: _Entry) -> None:
        held = self._credentials.get(entry.credential.id)
        if held is None or held.credential.version <= entry.credential.version:
            self._credentials.put(entry.credential.id, entry)

    async def _watch(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._loads.run("check", self.check)
            except (OSError, SQLAlchemyError) as exc:  # the store is away: calls read it (and fail) meanwhile
                log.warning("credential_cache_check_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def check(self) -> None:
        """Drop what changed in the store since the last check; serve the rest until ``MAX_STALENESS``
        after this check started."""
        started = self._clock()
        generations = await self._objects.change_counters()
        known = self._generations
        if known is None:  # what was read before the first check is not trusted
            self.clear()
        elif generations != known:
            if generations[0] != known[0]:
                stamps = await self._objects.credential_stamps()
                for credential_id in self._credentials:
                    entry = self._credentials.pop(credential_id)
                    if entry is not None and entry.stamp is not None and stamps.get(credential_id) == entry.stamp:
                        self._credentials.put(credential_id, entry)
            if generations[1] != known[1]:
                self._syncs.clear()
            self._epoch += 1
        self._generations = generations
        self._trusted_until = started + self._max_staleness
