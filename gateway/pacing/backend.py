"""What a pacing backend does for the pacer: reserve a slot, give it back, pause, describe.

A backend holds bucket state (in-process or in Redis) and applies ``bucket.py``'s math to it; the
pacer does the waiting. ``Reservation.deadline`` is in the event loop's clock (``loop.time()``)
whatever clock the backend schedules with, so the pacer can sleep with ``loop.call_at``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.pacing.bucket import Charge
from gateway.pacing.registry import BucketSpec


class BackendError(Exception):
    """The shared backend could not be reached or answered nonsense; the pacer applies the policy."""


@dataclass(frozen=True)
class Reservation:
    buckets: tuple[BucketSpec, ...]
    charges: tuple[Charge, ...]
    deadline: float


@dataclass(frozen=True)
class Refused:
    retry_after: float  # seconds


class Backend(Protocol):
    name: str

    async def reserve(self, buckets: Sequence[BucketSpec], max_wait: float) -> Reservation | Refused:
        """Take a slot in every bucket at once, or refuse (without reserving) beyond ``max_wait``."""
        ...

    async def release(self, reservation: Reservation) -> None:
        """Give back a slot whose caller went away before it."""
        ...

    async def pause(self, bucket: BucketSpec, seconds: float) -> None:
        """No call through ``bucket`` for ``seconds``, for every caller of this backend."""
        ...

    def overtaken(self, reservation: Reservation) -> bool:
        """Whether a pause learned since the reservation now covers its slot (then reserve again)."""
        ...

    async def describe(self, bucket: BucketSpec) -> dict[str, Any]:
        """``tokens`` and ``paused_until`` (unix seconds or None) of one bucket."""
        ...

    async def ping(self) -> bool: ...
