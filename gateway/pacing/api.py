"""What the rest of the gateway needs from the pacer: the contract between pacing and upstream.

The upstream client calls ``acquire`` before every send, ``Permit.release`` when the exchange is
over (body fully relayed or failed), and ``observe`` with every upstream answer so 429s and
rate-limit headers (and, for the few refusals only a body names, the body) pause the bucket for every
caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, Protocol

from gateway.config import Config
from gateway.domain.objects import Credential
from gateway.pacing.scheduler import DEFAULT_SHARE, Share

# The share of the upstream calls made by the running request: set once at the edge (priority
# header, token), read by the upstream client for every call, however deep in a mutation it is made.
current_share: ContextVar[Share] = ContextVar("pacing_share", default=DEFAULT_SHARE)


class Permit(Protocol):
    """A granted slot. ``waited`` is the time spent queued, in seconds."""

    @property
    def waited(self) -> float: ...

    @property
    def max_wait(self) -> float:
        """The longest this call may wait in all, from its limits: retries spend what is left of it."""

    def release(self) -> None:
        """Give back the ``max_concurrency`` permit, if any; safe to call more than once."""


class Pacer(Protocol):
    async def acquire(
        self,
        credential: Credential,
        path: str,
        *,
        max_wait: float | None = None,
        share: Share = DEFAULT_SHARE,
        method: str = "GET",
        cost: int | None = None,
    ) -> Permit:
        """Wait for this call's turn in every bucket that applies to ``credential`` (``method``, ``path``).

        ``cost`` (the client's ``x-gateway-cost``) replaces the cost the rules give the call; outside
        1..the smallest burst of its buckets it raises ``InvalidRequest``.

        ``share`` is the call's priority class, tenant and weight (scheduler.py): a queued call is
        granted by class, then fairly between tenants, then in arrival order.

        Raises ``RateLimited`` (with ``retry_after``) without queueing when the turn lies beyond
        ``max_wait`` (the credential's, unless given), and ``BackendUnavailable`` when the shared
        backend is down and the policy is ``reject``. Cancellation while waiting leaks nothing.
        """
        ...

    async def observe(
        self,
        credential: Credential,
        path: str,
        status: int,
        headers: Mapping[str, str],
        *,
        method: str = "GET",
        body: bytes | None = None,
    ) -> float | None:
        """Feed an upstream answer; returns the pause in seconds if it paused a bucket, else None.

        ``body``: the answer's first ``adaptive.BODY_HEAD`` bytes, when ``reads_body`` asked for them."""
        ...

    def reads_body(self, credential: Credential, status: int) -> bool:
        """Whether an answer of ``status`` may pause by what its body says (Salesforce's 403
        ``REQUEST_LIMIT_EXCEEDED``): the client then reads its first bytes before ``observe``."""
        ...

    async def describe(self, credential: Credential) -> dict[str, Any]:
        """The bucket's state for ``GET /v1/credentials/{id}``: limits, tokens, queue depth, paused until."""
        ...

    async def ping(self) -> bool:
        """Whether the backend is reachable (for ``/readyz``)."""
        ...

    def reconfigure(self, config: Config) -> None:
        """Take a reloaded config's provider limits for the calls that follow."""
        ...
