"""The stored objects as the services use them: decrypted, immutable, never serialized as they are.

The store builds them from rows (opening the sealed secrets); ``repr()`` names them without secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gateway.domain.models import (
    TOKEN_SCOPES,
    Auth,
    ObjectKind,
    Provider,
    RateLimitOverride,
    TimeoutsOverride,
    TokenPriority,
    TokenScope,
)
from gateway.errors import InvalidRequest


class Memo:
    """What the layers that send a call derive from one credential object, kept on that object.

    The upstream client keeps its prepared request here (auth injection, timeouts, TLS, parsed base
    URL), the pacer the credential's bucket plan and its provider's answers: a proxied call reaches
    all of it from the credential the cache handed out, with no lookup of its own, and with 10,000
    credentials it touches one credential's memory rather than an entry in each layer's cache. A
    changed or deleted credential is a new object (or none), so what was derived from the old one
    goes with it; each layer also checks that its slot was derived from its current config (a reload).
    """

    __slots__ = ("pacing", "upstream")

    def __init__(self) -> None:
        self.pacing: Any = None  # gateway.pacing.pacer: the plan, for the config it was made from
        self.upstream: Any = None  # gateway.upstream.client: the prepared request, likewise


@dataclass(frozen=True)
class Credential:
    """A credential with its auth decrypted: handed to the upstream client, never serialized."""

    id: str
    provider: Provider
    base_url: str
    auth: Auth
    rate_limit: RateLimitOverride | None
    timeouts: TimeoutsOverride | None
    ca_bundle: str | None
    version: int
    # Not part of the credential: never compared, hashed, shown, nor carried over by ``replace``.
    memo: Memo = field(default_factory=Memo, init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        return f"Credential(id={self.id!r}, provider={self.provider!r}, auth_type={self.auth.type!r})"


@dataclass(frozen=True)
class Sync:
    id: str
    credential_id: str
    collections: tuple[str, ...]
    options: dict[str, str]
    # change capture (see gateway/syncs)
    state: str = "backfilling"
    paused: bool = False
    cursor: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, int] = field(default_factory=dict)
    generation: int = 0
    last_error: str | None = None
    last_poll_at: datetime | None = None
    caught_up_at: datetime | None = None
    # Why this version refuses the stored options (an older one wrote them), None when it does not:
    # such a sync reads nothing and takes no mutation until a PATCH sets valid options.
    options_error: str | None = None


@dataclass(frozen=True)
class Consumer:
    """A consumer with its secret settings (webhook secret, DSN) decrypted into ``settings``."""

    id: str
    kind: str
    sync_id: str | None
    collections: tuple[str, ...] | None
    settings: dict[str, Any]
    position: int
    status: str

    def __repr__(self) -> str:
        return f"Consumer(id={self.id!r}, kind={self.kind!r})"

    def wants(self, sync_id: str, collection_id: str) -> bool:
        """Whether this consumer's filter lets events of that sync and collection through."""
        if self.sync_id is not None and self.sync_id != sync_id:
            return False
        return self.collections is None or collection_id in self.collections


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name, scopes, optional id restriction and pacing class.

    ``priority`` and ``weight`` say how the token's upstream calls share a credential's budget;
    ``expires_at`` (epoch seconds) is when the token stops working.
    """

    name: str
    scopes: frozenset[str]
    only: frozenset[str] | None
    priority: TokenPriority = "normal"
    weight: int = 1
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def has_scope(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def may_use(self, kind: ObjectKind, object_id: str) -> bool:
        """Whether ``--only`` lets this token use the ``kind`` object ``object_id``: only the exact
        ``kind:id`` entry does (an object whose id starts like a kind, ``sync:x``, is ``sync:sync:x``)."""
        return self.only is None or f"{kind}:{object_id}" in self.only


def parse_scopes(text: str) -> list[TokenScope]:
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in TOKEN_SCOPES]
    if unknown or not scopes:
        raise InvalidRequest(
            f"scope: unknown {unknown or 'empty'}; choose from {', '.join(TOKEN_SCOPES)}", field="scopes"
        )
    return [s for s in TOKEN_SCOPES if s in scopes]
