"""The Objects facade: credentials, syncs and consumers, each kind's queries in its own module.

``Objects`` is the only code that reads or writes those tables. Secrets go in and out through the
``Keyring``: the whole ``auth`` object of a credential and the secret settings of a consumer (webhook
secret, postgres DSN) are one ciphertext each. Reads for the Management API return masked views;
``credential()``/``consumer()`` return decrypted ``gateway.domain.objects`` for the proxy and the workers.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import tables as t
from gateway.store.consumers import ConsumerRows
from gateway.store.credentials import CredentialRows
from gateway.store.rows import Sealer
from gateway.store.syncs import CollectionCheck, SyncRows

_SEALED = ((t.credentials, "auth_secret"), (t.consumers, "settings_secret"))


class Objects(CredentialRows, SyncRows, ConsumerRows):
    """Every object kind behind one facade; each kind's queries live in its own module.

    ``collection_check``: the providers' rule of which collections a sync may read (the store knows
    no providers); the gateway passes ``providers.capture.check_sync``.
    """

    def __init__(
        self, engine: AsyncEngine, keyring: Sealer, *, collection_check: CollectionCheck | None = None
    ) -> None:
        super().__init__(engine, keyring)
        self.collection_check = collection_check

    async def key_ids_in_use(self) -> set[str]:
        """The key ids that sealed the stored secrets: a key list without one of them cannot open them."""
        used: set[str] = set()
        async with self.engine.connect() as conn:
            for table, column in _SEALED:
                for (sealed,) in (await conn.execute(select(table.c[column]))).all():
                    if sealed is not None:
                        used.add(self.keyring.key_id_of(sealed))
        return used

    async def rotate_keys(self) -> int:
        """Re-seal every stored secret with the newest key, all in one transaction; re-runs are no-ops."""
        changed = 0
        async with self.engine.begin() as conn:
            for table, column in _SEALED:
                rows = (await conn.execute(select(table.c.id, table.c[column]))).all()
                for object_id, sealed in rows:
                    if sealed is None:
                        continue
                    resealed = self.keyring.reseal(sealed)
                    if resealed != sealed:
                        await conn.execute(update(table).where(table.c.id == object_id).values({column: resealed}))
                        changed += 1
        return changed
