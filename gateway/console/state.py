"""The live state the console shows per credential, from the pacer's ``describe`` and this replica's rates.

``describe`` is the hook ``GET /v1/credentials/{id}`` uses for its ``pacing`` field, so the console
and the API show the same bucket; the rates (calls per second, throttles, wait percentiles) are
this process's own (``observability/recent.py``). Rows are plain JSON-ready dicts: the overview
renders them and the live stream sends them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.console.keys import Services
from gateway.domain.objects import Credential
from gateway.store.objects import Objects

PRIORITIES = ("high", "normal", "low")


def queues(pacing: Mapping[str, Any]) -> tuple[int, dict[str, int]]:
    """Total queue depth, and the depth per priority class while anything waits (else empty)."""
    depth = int(pacing.get("queue_depth") or 0)
    by_class = pacing.get("queued")
    if not depth or not isinstance(by_class, Mapping):
        return depth, {}
    return depth, {p: int(by_class.get(p, 0)) for p in PRIORITIES}


def _limit_per_second(pacing: Mapping[str, Any]) -> float | None:
    rate, per = pacing.get("rate"), pacing.get("per")
    if isinstance(rate, int | float) and isinstance(per, int | float) and per > 0:
        return round(rate / per, 3)
    return None


async def credential_row(services: Services, credential: Credential) -> dict[str, Any]:
    """One credential's bucket and rates; ``pacing`` is the describe answer as the API gives it."""
    pacing = await services.describe(credential)
    depth, per_class = queues(pacing)
    tokens = pacing.get("tokens")
    return {
        "id": credential.id,
        "provider": credential.provider,
        "tokens": round(tokens, 1) if isinstance(tokens, int | float) else None,
        "queue_depth": depth,
        "queues": per_class,
        "paused_until": pacing.get("paused_until"),
        "limit_per_second": _limit_per_second(pacing),
        "burst": pacing.get("burst"),
        "pacing": pacing,
        **services.recent.rates.summary(credential.id),
    }


async def credential_rows(services: Services, credentials: list[Credential]) -> list[dict[str, Any]]:
    return [await credential_row(services, credential) for credential in credentials]


class CredentialList:
    """Every credential, re-read from the store only when its fingerprint moved.

    The overview and the live stream need each credential's id, provider and limits for ``describe``;
    reading (and decrypting) 1,000 of them was most of a render, and they rarely change.
    """

    def __init__(self, objects: Objects) -> None:
        self._objects = objects
        self._fingerprint: tuple[int, Any] | None = None
        self._credentials: list[Credential] = []

    async def all(self) -> list[Credential]:
        fingerprint = await self._objects.credentials_fingerprint()
        if fingerprint != self._fingerprint:
            self._credentials = await self._objects.all_credentials()
            self._fingerprint = fingerprint
        return self._credentials


CREDENTIALS = web.AppKey("console_credentials", CredentialList)
