"""API tokens: random secrets shown once, stored as SHA-256 hashes, checked in constant time.

A token carries 32 random bytes, so a fast hash is enough (no password stretching is needed
against brute force); lookups go by hash and the final comparison uses ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.models import ID_PATTERN, TokenView
from gateway.store import tables as t
from gateway.store.db import as_utc, utcnow

Scope = Literal["proxy", "mutations", "consumers", "admin"]
SCOPES: tuple[Scope, ...] = ("proxy", "mutations", "consumers", "admin")
TOKEN_PREFIX = "gw_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name, scopes and optional id restriction."""

    name: str
    scopes: frozenset[str]
    only: frozenset[str] | None

    def has_scope(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def may_use(self, object_id: str) -> bool:
        return self.only is None or object_id in self.only


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str) -> list[Scope]:
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidRequest(f"scope: unknown {unknown or 'empty'}; choose from {', '.join(SCOPES)}")
    return [s for s in SCOPES if s in scopes]


class Tokens:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, name: str, scopes: list[Scope], only: list[str] | None = None) -> str:
        """Store a new token and return it; this is the only time it is ever visible."""
        if not re.match(ID_PATTERN, name):
            raise InvalidRequest("name: must match " + ID_PATTERN)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        values = {
            "name": name,
            "token_hash": hash_token(token),
            "scopes": list(scopes),
            "only_ids": only,
            "created_at": utcnow(),
        }
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(t.api_tokens).values(**values))
        except IntegrityError:
            raise Conflict(f"a token named {name!r} exists; revoke it first") from None
        return token

    async def authenticate(self, token: str) -> Principal | None:
        digest = hash_token(token)
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t.api_tokens).where(t.api_tokens.c.token_hash == digest))).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        only = frozenset(row.only_ids) if row.only_ids is not None else None
        return Principal(row.name, frozenset(row.scopes), only)

    async def list(self) -> list[TokenView]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.api_tokens).order_by(t.api_tokens.c.name))).all()
        return [
            TokenView(
                name=r.name,
                scopes=r.scopes,
                only=r.only_ids,
                created_at=as_utc(r.created_at),
                last_used_at=as_utc(r.last_used_at),
            )
            for r in rows
        ]

    async def revoke(self, name: str) -> None:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(t.api_tokens).where(t.api_tokens.c.name == name))
        if not result.rowcount:
            raise NotFound(f"token {name!r} not found")
