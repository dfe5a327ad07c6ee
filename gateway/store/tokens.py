"""API tokens: random secrets shown once, stored as SHA-256 hashes, checked in constant time.

A token carries 32 random bytes, so a fast hash is enough (no password stretching is needed
against brute force); lookups go by hash and the final comparison uses ``hmac.compare_digest``.

Authentication runs on every request, and a store round trip for it cost more than the rest of a
proxied call, so positive lookups are cached in-process by the token's hash for ``cache_ttl`` seconds
(``server.token_cache_ttl``). The trade-off: a token revoked elsewhere (the CLI, another replica)
keeps working here for up to that TTL; a revocation through this object drops its entries at once.
Negative answers are cached for at most ``NEGATIVE_TTL`` and both caches are bounded, so a flood of
bad tokens neither grows memory nor keeps a token created a moment later from working for long.
Expiry is checked on every call, cached or not, so an expired token stops at its ``expires_at``.
``last_used_at`` is written at most once per ``TOUCH_INTERVAL`` per token and process: it answers
"is this token still in use?", which needs no per-request write on the hot path.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.domain.models import TokenCreated, TokenIn, TokenView
from gateway.domain.objects import Principal
from gateway.errors import Conflict, NotFound
from gateway.lru import LRU
from gateway.singleflight import SingleFlight
from gateway.store import tables as t
from gateway.store.db import as_utc, utcnow

log = structlog.get_logger(__name__)
TOKEN_PREFIX = "gw_"
NEGATIVE_TTL = 0.25  # seconds: enough to absorb a burst of one bad token, too short to matter
CACHE_SIZE = 10_000  # entries per cache (positive, negative, last writes); least recently used go first
TOUCH_INTERVAL = 60.0  # seconds between two writes of one token's last_used_at by one process


def hash_token(token: str) -> str:
    """The stored digest; ``surrogateescape`` because aiohttp decodes header bytes that are not UTF-8 so."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class _TTLCache:
    """A bounded map of ``key -> (expires_at, value)`` (least recently used dropped first); an
    expired entry is never answered and goes when looked up or when its turn to be dropped comes."""

    def __init__(self, *, size: int, clock: Callable[[], float]) -> None:
        self._entries: LRU[str, tuple[float, Principal | None]] = LRU(size)
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[float, Principal | None] | None:
        hit = self._entries.get(key)
        if hit is not None and hit[0] <= self._clock():
            self._entries.pop(key)
            return None
        return hit

    def put(self, key: str, value: Principal | None, ttl: float) -> None:
        self._entries.put(key, (self._clock() + ttl, value))

    def drop(self, name: str) -> None:
        for key, (_, principal) in self._entries.items():
            if principal is not None and principal.name == name:
                self._entries.pop(key)


class Tokens:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cache_ttl: float = 0.0,
        cache_size: int = CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """``cache_ttl`` seconds of positive caching (0 = every lookup asks the store); ``clock`` times
        the caches, ``wall_clock`` (epoch seconds) is compared with ``expires_at``."""
        self.engine = engine
        self._ttl = cache_ttl
        self._known = _TTLCache(size=cache_size, clock=clock)
        self._unknown = _TTLCache(size=cache_size, clock=clock)
        self._lookups = SingleFlight()  # an expiring entry under load: one store query, not one each
        self._clock = clock
        self._wall_clock = wall_clock
        self._touched: LRU[str, float] = LRU(cache_size)  # token name -> clock() of this process's last write

    async def create(self, spec: TokenIn) -> str:
        """Store a new token and return it; this is the only time it is ever visible."""
        return (await self.issue(spec)).token

    async def issue(self, spec: TokenIn) -> TokenCreated:
        """Store a new token; the answer is the row as written (read after the commit, a token revoked
        meanwhile made the create a 404 although it had been created)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        values = {
            "name": spec.name,
            "token_hash": hash_token(token),
            "scopes": list(spec.scopes),
            "only_ids": spec.only,
            "priority": spec.priority,
            "weight": spec.weight,
            "expires_at": spec.expires_at,
            "created_at": utcnow(),
        }
        try:
            async with self.engine.begin() as conn:
                row = (await conn.execute(insert(t.api_tokens).values(**values).returning(*t.api_tokens.c))).one()
        except IntegrityError:
            raise Conflict(f"a token named {spec.name!r} exists; revoke it first") from None
        return TokenCreated(**_view(row).model_dump(), token=token)

    async def authenticate(self, token: str) -> Principal | None:
        """The token's principal, or None when unknown, revoked or expired (cached as the module says)."""
        digest = hash_token(token)
        if self._ttl <= 0:
            principal = await self._lookup(digest)
        elif (hit := self._known.get(digest) or self._unknown.get(digest)) is not None:
            principal = hit[1]
        else:
            principal = await self._lookups.run(digest, lambda: self._lookup(digest))
            if principal is None:
                self._unknown.put(digest, None, min(self._ttl, NEGATIVE_TTL))
            else:
                self._known.put(digest, principal, self._ttl)
        if principal is None or principal.expired(self._wall_clock()):
            return None
        if self._touch_due(principal.name):  # nearly never: no coroutine on every call for it
            await self._touch(principal.name)
        return principal

    async def _lookup(self, digest: str) -> Principal | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t.api_tokens).where(t.api_tokens.c.token_hash == digest))).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        only = frozenset(row.only_ids) if row.only_ids is not None else None
        expires = as_utc(row.expires_at)
        return Principal(
            row.name,
            frozenset(row.scopes),
            only,
            priority=row.priority,
            weight=row.weight,
            expires_at=expires.timestamp() if expires is not None else None,
        )

    def _touch_due(self, name: str) -> bool:
        """Whether this use should be written: the first in ``TOUCH_INTERVAL`` by this process."""
        now = self._clock()
        last = self._touched.get(name)
        if last is not None and now - last < TOUCH_INTERVAL:
            return False
        self._touched.put(name, now)
        return True

    async def _touch(self, name: str) -> None:
        """Record the use in ``last_used_at`` (``_touch_due`` said when); a store hiccup here must not
        fail the request, whose token is already known good."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(t.api_tokens).where(t.api_tokens.c.name == name).values(last_used_at=utcnow())
                )
        except (SQLAlchemyError, OSError) as exc:
            log.warning("token_last_used_not_written", token_name=name, error=exc.__class__.__name__)

    async def list(self) -> list[TokenView]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(t.api_tokens).order_by(t.api_tokens.c.name))).all()
        return [_view(r) for r in rows]

    async def view(self, name: str) -> TokenView:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(t.api_tokens).where(t.api_tokens.c.name == name))).first()
        if row is None:
            raise NotFound(f"token {name!r} not found")
        return _view(row)

    async def revoke(self, name: str) -> None:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(t.api_tokens).where(t.api_tokens.c.name == name))
        self._known.drop(name)
        if not result.rowcount:
            raise NotFound(f"token {name!r} not found")


def _view(row: Row[Any]) -> TokenView:
    return TokenView(
        name=row.name,
        scopes=row.scopes,
        only=row.only_ids,
        priority=row.priority,
        weight=row.weight,
        created_at=as_utc(row.created_at),
        last_used_at=as_utc(row.last_used_at),
        expires_at=as_utc(row.expires_at),
    )
