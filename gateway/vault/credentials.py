"""OAuth2 access tokens kept fresh: refresh before expiry, or once after an upstream 401.

Concurrent requests share one refresh. Within a process a lock per credential serialises them and
each re-reads the stored credential first, so every waiter behind the first finds the new token and
returns at once. Across replicas a lease (``store.leases``: owner + expiry, so a crashed owner
cannot block others for long) is taken before calling the token endpoint, and the credential is
re-read after taking it: a refresh another replica just finished is reused, never repeated (many
providers revoke the old refresh token on use, so a second refresh would fail).

New tokens are stored encrypted with ``Objects.replace_auth``, guarded by the credential's version so
an operator's concurrent change is never overwritten. The token endpoint is reached through the
``TokenPoster`` the upstream client hands in, keeping aiohttp out of the vault.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from gateway.domain.models import HeaderSafeStr, OAuth2Auth
from gateway.domain.objects import Credential
from gateway.errors import GatewayError, UpstreamAuthFailed, UpstreamDenied
from gateway.keylocks import KeyLocks
from gateway.observability.metrics import Metrics
from gateway.store.leases import Leases
from gateway.store.objects import Objects

log = structlog.get_logger(__name__)
# (token_url, form fields) -> (HTTP status, parsed JSON body or None); raises GatewayError on I/O faults.
MAX_TOKEN_LIFETIME = 10 * 365 * 86400.0
TokenPoster = Callable[[str, dict[str, str]], Awaitable[tuple[int, Any]]]


class TokenResponse(BaseModel):
    """RFC 6749 section 5.1; providers add fields of their own (``instance_url``, ``scope``), so extras are ignored."""

    model_config = ConfigDict(extra="ignore")
    # Checked as a written secret is (no CR, LF, NUL ...) and never empty: stored, a token holding a
    # control character made every later call a 500, and an empty one was sent as "Bearer".
    access_token: Annotated[HeaderSafeStr, Field(min_length=1)]
    refresh_token: Annotated[HeaderSafeStr, Field(min_length=1)] | None = None
    expires_in: float | None = None

    @field_validator("expires_in")
    @classmethod
    def _lifetime(cls, value: float | None) -> float | None:
        """Seconds the token lives, within reason: ``1e20`` or ``Infinity`` overflowed the expiry time (a 500
        on the call that refreshed); past ten years counts as ten years, NaN or <= 0 as not said."""
        if value is None or math.isnan(value) or value <= 0:
            return None
        return min(value, MAX_TOKEN_LIFETIME)


def access_token(credential: Credential) -> str | None:
    auth = credential.auth
    return auth.access_token.get_secret_value() if isinstance(auth, OAuth2Auth) else None


class OAuth2Refresher:
    """Keeps OAuth2 credentials' access tokens valid; a no-op for every other auth type."""

    def __init__(
        self,
        objects: Objects,
        metrics: Metrics,
        post_form: TokenPoster,
        *,
        skew: float = 60.0,
        lease_ttl: float = 30.0,
    ) -> None:
        self._objects = objects
        self._metrics = metrics
        self._post_form = post_form
        self._skew = skew
        self._lease_ttl = lease_ttl
        self._leases = Leases(objects.engine, "oauth2-" + uuid.uuid4().hex, ttl=lease_ttl)
        self._locks: KeyLocks[str] = KeyLocks()  # per credential, while a refresh is on

    async def current(self, credential: Credential) -> Credential:
        """``credential`` itself, or with a fresh access token if the stored one expires soon."""
        if not isinstance(credential.auth, OAuth2Auth) or not self._expiring(credential.auth):
            return credential
        return await self.refresh(credential, stale_token=credential.auth.access_token.get_secret_value())

    async def refresh(self, credential: Credential, *, stale_token: str) -> Credential:
        """A credential whose access token is not ``stale_token`` (refreshing at most once for all callers)."""
        async with self._locks.hold(credential.id):
            latest = await self._objects.credential(credential.id)
            if self._usable(latest, stale_token):
                return latest
            return await self._refresh_under_lease(latest, stale_token)

    def _expiring(self, auth: OAuth2Auth) -> bool:
        if auth.expires_at is None:
            return False
        expires_at = auth.expires_at if auth.expires_at.tzinfo else auth.expires_at.replace(tzinfo=UTC)
        return expires_at - timedelta(seconds=self._skew) <= datetime.now(UTC)

    def _usable(self, credential: Credential, stale_token: str) -> bool:
        auth = credential.auth
        if not isinstance(auth, OAuth2Auth):
            return True  # re-configured to another auth type meanwhile: nothing to refresh
        return auth.access_token.get_secret_value() != stale_token and not self._expiring(auth)

    async def _refresh_under_lease(self, credential: Credential, stale_token: str) -> Credential:
        name = f"oauth2-refresh:{credential.id}"
        deadline = time.monotonic() + self._lease_ttl
        while not await self._leases.acquire(name):
            if time.monotonic() > deadline:
                self._count(credential, "failure")
                raise UpstreamAuthFailed(f"Error: timed out waiting for another replica to refresh {credential.id!r}")
            await asyncio.sleep(0.05)  # another replica holds the lease; its refresh is about to land
        try:
            latest = await self._objects.credential(credential.id)
            if self._usable(latest, stale_token):
                return latest
            return await self._exchange(latest)
        finally:
            await self._leases.release(name)

    async def _exchange(self, credential: Credential) -> Credential:
        auth = credential.auth
        assert isinstance(auth, OAuth2Auth)
        form = {
            "grant_type": "refresh_token",
            "refresh_token": auth.refresh_token.get_secret_value(),
            "client_id": auth.client_id,
            "client_secret": auth.client_secret.get_secret_value(),
        }
        if auth.scopes:
            form["scope"] = " ".join(auth.scopes)
        try:
            status, body = await self._post_form(auth.token_url, form)
            if status != 200:
                raise UpstreamAuthFailed(
                    f"Error: OAuth2 refresh of {credential.id!r} was refused by the token endpoint ({status})",
                    upstream_status=status,
                )
            token = TokenResponse.model_validate(body)
        except (GatewayError, ValidationError) as exc:
            self._count(credential, "failure")
            log.warning("oauth2_refresh_failed", credential_id=credential.id, reason=exc.__class__.__name__)
            if isinstance(exc, (UpstreamAuthFailed, UpstreamDenied)):  # a denied token_url says so
                raise
            # Not chained: a ValidationError's text holds its input, the token endpoint's answer (a token).
            raise UpstreamAuthFailed(f"Error: OAuth2 refresh of {credential.id!r} failed") from None
        fresh = self._renewed(auth, token)
        stored = await self._objects.replace_auth(credential.id, expected_version=credential.version, auth=fresh)
        self._count(credential, "success")
        if not stored:  # changed by an operator meanwhile: theirs wins
            return await self._objects.credential(credential.id)
        return replace(credential, auth=fresh, version=credential.version + 1)

    @staticmethod
    def _renewed(auth: OAuth2Auth, token: TokenResponse) -> OAuth2Auth:
        expires_at = datetime.now(UTC) + timedelta(seconds=token.expires_in) if token.expires_in else None
        return auth.model_copy(
            update={
                "access_token": SecretStr(token.access_token),
                "refresh_token": SecretStr(token.refresh_token) if token.refresh_token else auth.refresh_token,
                "expires_at": expires_at,
            }
        )

    def _count(self, credential: Credential, outcome: str) -> None:
        self._metrics.oauth_refreshes.labels(credential.provider, outcome).inc()
