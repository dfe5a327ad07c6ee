"""API tokens: random secrets shown once, stored as SHA-256 hashes, checked in constant time.

A token carries 32 random bytes, so a fast hash is enough (no password stretching is needed
against brute force); lookups go by hash and the final comparison uses ``hmac.compare_digest``.

Authentication runs on every request, and a store round trip for it cost more than the rest of a
proxied call, so positive lookups are cached in-process by the token's hash for ``cache_ttl`` seconds
(``server.token_cache_ttl``). The trade-off: a token revoked elsewhere (the CLI, another replica)
keeps working here for up to that TTL; a revocation through this object drops its entries at once.
Negative answers are cached for at most ``NEGATIVE_TTL`` and both caches are bounded, so a flood of
bad tokens neither grows memory nor keeps a token created a moment later from working for long.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.models import ID_PATTERN, TokenView
from gateway.singleflight import SingleFlight
from gateway.store import tables as t
from gateway.store.db import as_utc, utcnow

Scope = Literal["proxy", "mutations", "consumers", "admin"]
SCOPES: tuple[Scope, ...] = ("proxy", "mutations", "consumers", "admin")
TOKEN_PREFIX = "gw_"
NEGATIVE_TTL = 0.25  # seconds: enough to absorb a burst of one bad token, too short to matter
CACHE_SIZE = 10_000  # entries per cache (positive, negative); beyond it expired then oldest go


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


class _TTLCache:
    """A bounded map of ``key -> (expires_at, value)`` kept in expiry order (one TTL per cache), so
    expired and excess entries are always at the front and evicting them is O(1) each."""

    def __init__(self, *, size: int, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[str, tuple[float, Principal | None]] = OrderedDict()
        self._size = size
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[float, Principal | None] | None:
        hit = self._entries.get(key)
        return hit if hit is not None and hit[0] > self._clock() else None

    def put(self, key: str, value: Principal | None, ttl: float) -> None:
        now = self._clock()
        self._entries.pop(key, None)
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest[0] > now and len(self._entries) < self._size:
                break
            self._entries.popitem(last=False)
        self._entries[key] = (now + ttl, value)

    def drop(self, name: str) -> None:
        for key in [k for k, (_, p) in self._entries.items() if p is not None and p.name == name]:
            del self._entries[key]


class Tokens:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cache_ttl: float = 0.0,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``cache_ttl`` seconds of positive caching (0 = every lookup asks the store)."""
        self.engine = engine
        self._ttl = cache_ttl
        self._known = _TTLCache(size=cache_size, clock=clock)
        self._unknown = _TTLCache(size=cache_size, clock=clock)
        self._lookups = SingleFlight()  # an expiring entry under load: one store query, not one each

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
        """The token's principal, or None when unknown or revoked (cached as the module says)."""
        digest = hash_token(token)
        if self._ttl <= 0:
            return await self._lookup(digest)
        hit = self._known.get(digest) or self._unknown.get(digest)
        if hit is not None:
            return hit[1]
        principal = await self._lookups.run(digest, lambda: self._lookup(digest))
        if principal is None:
            self._unknown.put(digest, None, min(self._ttl, NEGATIVE_TTL))
        else:
            self._known.put(digest, principal, self._ttl)
        return principal

    async def _lookup(self, digest: str) -> Principal | None:
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
        self._known.drop(name)
        if not result.rowcount:
            raise NotFound(f"token {name!r} not found")
