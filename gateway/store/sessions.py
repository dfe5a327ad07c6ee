"""Web console sessions: an admin token exchanged for a random session id, both kept only as hashes.

Sessions live in the store, not in one process, so a cookie issued by one replica works on all of
them. Every check joins the session with ``api_tokens`` by the token's hash: revoking the admin
token (which deletes its row) ends its sessions at once, on every replica, with no cache to wait
out; a token revoked and re-created under the same name has a new hash, so old sessions stay dead.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store import tables as t
from gateway.store.db import as_utc, utcnow
from gateway.store.tokens import hash_token


@dataclass(frozen=True)
class ConsoleSession:
    """A valid session: who signed in (the admin token's name) and until when (epoch seconds)."""

    token_name: str
    expires_at: float


class Sessions:
    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._clock = clock

    async def open(self, token: str, *, ttl: float) -> str:
        """A new session for ``token`` (already checked to be an admin token); returns its secret id.

        Expired rows are swept here, on sign-in, which is rare enough to pay for it.
        """
        secret = secrets.token_urlsafe(32)
        now = self._clock()
        async with self.engine.begin() as conn:
            await conn.execute(delete(t.console_sessions).where(t.console_sessions.c.expires_at <= now))
            await conn.execute(
                insert(t.console_sessions).values(
                    session_hash=hash_token(secret),
                    token_hash=hash_token(token),
                    created_at=utcnow(),
                    expires_at=now + ttl,
                )
            )
        return secret

    async def check(self, secret: str) -> ConsoleSession | None:
        """The session, or None when unknown or expired, or its admin token was revoked or has expired."""
        s, tok = t.console_sessions, t.api_tokens
        query = (
            select(s.c.expires_at, tok.c.name, tok.c.scopes, tok.c.expires_at.label("token_expires_at"))
            .join(tok, tok.c.token_hash == s.c.token_hash)
            .where(s.c.session_hash == hash_token(secret), s.c.expires_at > self._clock())
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or "admin" not in row.scopes:
            return None
        token_expires = as_utc(row.token_expires_at)
        if token_expires is not None and token_expires.timestamp() <= self._clock():
            return None  # an expired token is refused like a revoked one, and so are its sessions
        return ConsoleSession(token_name=row.name, expires_at=row.expires_at)

    async def close(self, secret: str) -> None:
        """Sign-out: the session stops working everywhere."""
        sessions = t.console_sessions
        async with self.engine.begin() as conn:
            await conn.execute(delete(sessions).where(sessions.c.session_hash == hash_token(secret)))
