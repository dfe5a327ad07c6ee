"""What every pacing backend does for the pacer: give a slot back, pause, describe.

A backend holds bucket state (in-process or in Redis) and applies ``bucket.py``'s math and
``scheduler.py``'s order to it; waiting differs (local: queue.py; Redis: shared_queue.py).
``Reservation.deadline`` is the granted slot in the event loop's clock (``loop.time()``) whatever
clock the backend schedules with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gateway.pacing.bucket import Charge
from gateway.pacing.registry import BucketSpec


class BackendError(Exception):
    """The shared backend could not be reached or answered nonsense; the pacer applies the policy."""


@dataclass(frozen=True)
class Place:
    """Where a granted call stood in a shared (Redis) queue: a grant given back late rejoins there."""

    member: str
    tag: int


@dataclass(frozen=True)
class Permit:
    """A ``max_concurrency`` lease granted with a shared (Redis) slot: lease set ``key``, lease ``id``."""

    key: str
    id: str


@dataclass(frozen=True)
class Reservation:
    buckets: tuple[BucketSpec, ...]
    charges: tuple[Charge, ...]
    deadline: float
    place: Place | None = None  # granted from a shared queue (not at once)
    permit: Permit | None = None


@dataclass(frozen=True)
class Refused:
    retry_after: float  # seconds


class Backend(Protocol):
    name: str

    async def release(self, reservation: Reservation) -> None:
        """Give back a slot whose caller went away before it."""
        ...

    async def pause(self, bucket: BucketSpec, seconds: float) -> None:
        """No call through ``bucket`` for ``seconds``, for every caller of this backend."""
        ...

    async def describe(self, bucket: BucketSpec) -> dict[str, Any]:
        """``tokens`` and ``paused_until`` (unix seconds or None) of one bucket."""
        ...

    async def ping(self) -> bool: ...
