"""A short-lived in-process cache of decrypted credentials and sync -> credential bindings.

Reading and decrypting the credential costs a store round trip on every proxied call, more than the
whole rest of the proxy's work; a TTL of about a second removes it from the hot path while keeping
every change visible almost at once. Staleness is harmless where it matters most: a credential whose
OAuth2 token another replica refreshed answers 401, and the refresher re-reads the store before
refreshing, so the new token is found and cached. Refreshes in this process update the cache directly.
Unknown ids are not cached, so a credential created a moment ago is found at once. Concurrent misses
of one id share a single store read.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.domain.objects import Credential
from gateway.singleflight import SingleFlight
from gateway.store.objects import Objects


class CredentialCache:
    def __init__(self, objects: Objects, *, ttl: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._objects = objects
        self._ttl = ttl
        self._clock = clock
        self._credentials: dict[str, tuple[float, Credential]] = {}
        self._syncs: dict[str, tuple[float, str]] = {}
        self._loads = SingleFlight()

    async def credential(self, credential_id: str) -> Credential:
        """The credential (``NotFound`` when unknown), at most ``ttl`` seconds old."""
        hit = self._credentials.get(credential_id)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        load = lambda: self._objects.credential(credential_id)  # noqa: E731
        credential = await self._loads.run("credential:" + credential_id, load)
        self.put(credential)
        return credential

    async def for_sync(self, sync_id: str) -> Credential:
        """The credential a sync is bound to (``NotFound`` when either is unknown)."""
        hit = self._syncs.get(sync_id)
        if hit is not None and hit[0] > self._clock():
            return await self.credential(hit[1])
        sync = await self._loads.run("sync:" + sync_id, lambda: self._objects.sync(sync_id))
        self._syncs[sync_id] = (self._clock() + self._ttl, sync.credential_id)
        return await self.credential(sync.credential_id)

    def clear(self) -> None:
        """Forget everything (a reload changed declared credentials): the next call reads the store."""
        self._credentials.clear()
        self._syncs.clear()

    def put(self, credential: Credential) -> None:
        """Remember ``credential`` unless a newer version is cached already."""
        hit = self._credentials.get(credential.id)
        if hit is None or hit[1].version <= credential.version:
            self._credentials[credential.id] = (self._clock() + self._ttl, credential)
