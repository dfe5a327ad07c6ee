"""Credentials in the store: the whole ``auth`` object sealed as one ciphertext; masked on read."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import structlog
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from gateway.domain.models import (
    Auth,
    CredentialIn,
    CredentialPatch,
    CredentialView,
    HttpUrlStr,
    RateLimitOverride,
    TimeoutsOverride,
    masked_auth,
    reveal,
)
from gateway.domain.objects import Credential
from gateway.errors import Conflict, NotFound, describe_validation_error
from gateway.store import changes
from gateway.store import tables as t
from gateway.store.db import as_utc, utcnow
from gateway.store.rows import Rows, insert_unique, new_id

log = structlog.get_logger(__name__)
_AUTH = TypeAdapter[Any](Auth)
_BASE_URL = TypeAdapter[str](HttpUrlStr)
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
# What changes with every write to a credential's row: the cache compares it to drop stale entries.
Stamp = tuple[int, Any]


class CredentialRows(Rows):
    async def create_credential(self, body: CredentialIn) -> CredentialView:
        now = utcnow()
        values = {
            "id": body.id or new_id("credential"),
            "provider": body.provider,
            "base_url": body.base_url,
            "auth_type": body.auth.type,
            "auth_secret": self.keyring.seal(json.dumps(reveal(body.auth))),
            "rate_limit": _dump(body.rate_limit),
            "timeouts": _dump(body.timeouts),
            "ca_bundle": body.ca_bundle,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        async with self.engine.begin() as conn:
            await insert_unique(conn, t.credentials, values, "credential")
        return await self.credential_view(str(values["id"]))

    async def credential_view(self, credential_id: str) -> CredentialView:
        return self._credential_view(await self._row(t.credentials, credential_id, "credential"))

    async def list_credentials(self) -> list[CredentialView]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.credentials).order_by(t.credentials.c.id))).all()
        return [self._credential_view(row) for row in rows]

    async def credential(self, credential_id: str) -> Credential:
        return self._credential(await self._row(t.credentials, credential_id, "credential"))

    async def stamped_credential(self, credential_id: str) -> tuple[Credential, Stamp]:
        """The credential and the stamp of the row it was read from (see ``credential_stamps``)."""
        row = await self._row(t.credentials, credential_id, "credential")
        return self._credential(row), (row.version, row.updated_at)

    async def credential_stamps(self) -> dict[str, Stamp]:
        """Every credential's (version, updated_at), without decrypting: which rows changed since read."""
        columns = (t.credentials.c.id, t.credentials.c.version, t.credentials.c.updated_at)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(*columns))).all()
        return {row.id: (row.version, row.updated_at) for row in rows}

    async def change_counters(self) -> tuple[int, int]:
        """The credentials' and the syncs' change counters (store/changes.py), read together."""
        counters = await changes.generations(self.engine)
        return counters.get("credentials", 0), counters.get("syncs", 0)

    async def all_credentials(self) -> list[Credential]:
        """Every credential, decrypted, in one query (the console describes every bucket at once)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.credentials).order_by(t.credentials.c.id))).all()
        readable = []
        for row in rows:
            try:
                readable.append(self._credential(row))
            except Conflict as exc:  # one row an older version wrote must not hide every other one
                log.warning("credential_unreadable", credential_id=row.id, error=str(exc))
        return readable

    async def credentials_fingerprint(self) -> tuple[int, Any]:
        """(count, newest ``updated_at``): changes whenever a credential is added, changed or removed,
        so a reader holding ``all_credentials()`` knows when to read them again without decrypting."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(func.count(), func.max(t.credentials.c.updated_at)))).one()
        return int(row[0]), row[1]

    def _credential(self, row: Row[Any]) -> Credential:
        """The row, checked by today's rules: a value an older version stored and this one refuses (a
        header name, a host, a rule, a token) is a 409 naming its field on each call through the
        credential, until a PATCH repairs it, where it used to be a 500 on every call (or a call that
        never ended)."""

        def checked(field: str, parse: Callable[[], T]) -> T:
            try:
                return parse()
            except ValidationError as exc:
                problem = describe_validation_error(exc, prefix=field)
                message = f"credential {row.id!r} holds an {problem}; PATCH the credential to repair it"
                raise Conflict(message, field=field) from None

        return Credential(
            id=row.id,
            provider=row.provider,
            base_url=checked("base_url", lambda: _BASE_URL.validate_python(row.base_url)),
            auth=checked("auth", lambda: _AUTH.validate_python(json.loads(self.keyring.open(row.auth_secret)))),
            rate_limit=checked("rate_limit", lambda: _optional(RateLimitOverride, row.rate_limit)),
            timeouts=checked("timeouts", lambda: _optional(TimeoutsOverride, row.timeouts)),
            ca_bundle=row.ca_bundle,
            version=row.version,
        )

    async def patch_credential(self, credential_id: str, patch: CredentialPatch) -> CredentialView:
        values: dict[str, Any] = {}
        fields = patch.model_fields_set
        if "base_url" in fields and patch.base_url is not None:
            values["base_url"] = patch.base_url
        if "auth" in fields and patch.auth is not None:
            values["auth_type"] = patch.auth.type
            values["auth_secret"] = self.keyring.seal(json.dumps(reveal(patch.auth)))
            values["version"] = t.credentials.c.version + 1
        for name in ("rate_limit", "timeouts"):
            if name in fields:
                values[name] = _dump(getattr(patch, name))
        if "ca_bundle" in fields:
            values["ca_bundle"] = patch.ca_bundle
        await self._update(t.credentials, credential_id, "credential", values, counted="credentials")
        return await self.credential_view(credential_id)

    async def replace_auth(self, credential_id: str, *, expected_version: int, auth: Auth) -> bool:
        """Store refreshed OAuth2 tokens unless someone else changed the credential meanwhile."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(t.credentials)
                .where(t.credentials.c.id == credential_id, t.credentials.c.version == expected_version)
                .values(
                    auth_secret=self.keyring.seal(json.dumps(reveal(auth))),
                    version=expected_version + 1,
                    updated_at=utcnow(),
                )
            )
            if result.rowcount:
                await changes.bump(conn, "credentials")
        return bool(result.rowcount)

    async def delete_credential(self, credential_id: str) -> None:
        async with self.engine.begin() as conn:
            used = (
                (await conn.execute(select(t.syncs.c.id).where(t.syncs.c.credential_id == credential_id)))
                .scalars()
                .all()
            )
            if used:
                raise Conflict(
                    f"credential {credential_id!r} is used by sync(s) {', '.join(sorted(used))}; "
                    "delete or re-point them first",
                    syncs=sorted(used),
                )
            try:
                result = await conn.execute(delete(t.credentials).where(t.credentials.c.id == credential_id))
            except IntegrityError:  # a sync created since the check above: its foreign key is the real guard
                raise Conflict(
                    f"credential {credential_id!r} is used by a sync created meanwhile; delete or re-point it first"
                ) from None
            if result.rowcount:
                await changes.bump(conn, "credentials")
        if not result.rowcount:
            raise NotFound(f"credential {credential_id!r} not found")

    def _credential_view(self, row: Row[Any]) -> CredentialView:
        auth = json.loads(self.keyring.open(row.auth_secret))
        return CredentialView(
            id=row.id,
            provider=row.provider,
            base_url=row.base_url,
            auth=masked_auth(auth),
            rate_limit=row.rate_limit,
            timeouts=row.timeouts,
            ca_bundle=row.ca_bundle,
            created_at=as_utc(row.created_at),
            updated_at=as_utc(row.updated_at),
        )

    async def upsert_credential(self, body: CredentialIn) -> None:
        """Create or bring in line with the config; OAuth2 tokens refreshed at runtime are kept (a row
        this version cannot read takes the config's values whole)."""
        assert body.id is not None
        try:
            current: Credential | None = await self.credential(body.id)
        except NotFound:
            await self.create_credential(body)
            return
        except Conflict:
            current = None
        patch = CredentialPatch(
            base_url=body.base_url,
            auth=body.auth,
            rate_limit=body.rate_limit,
            timeouts=body.timeouts,
            ca_bundle=body.ca_bundle,
        )
        if current is not None and (
            _same_oauth_client(current.auth, body.auth) or reveal(current.auth) == reveal(body.auth)
        ):
            patch = patch.model_copy(update={"auth": None})
        await self.patch_credential(body.id, patch)


def _optional(model: type[M], stored: dict[str, Any] | None) -> M | None:
    return model.model_validate(stored) if stored else None


def _dump(model: RateLimitOverride | TimeoutsOverride | None) -> dict[str, Any] | None:
    return model.model_dump(exclude_none=True) if model is not None else None


def _same_oauth_client(stored: Auth, declared: Auth) -> bool:
    return (
        stored.type == declared.type == "oauth2"
        and getattr(stored, "client_id", None) == getattr(declared, "client_id", None)
        and getattr(stored, "token_url", None) == getattr(declared, "token_url", None)
    )
