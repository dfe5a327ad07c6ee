"""Salesforce's OAuth2 token endpoint (refresh-token grant) and the session check behind every call.

Access tokens issued here expire after the sandbox's ``token_ttl`` knob, so tests can watch the
gateway refresh them; like Salesforce, the answer carries no ``expires_in`` (clients learn of the
expiry from a 401 ``INVALID_SESSION_ID``). The static token given at start never expires.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass, field

from aiohttp import web

from gateway.sandbox.common import SANDBOX, random_id


@dataclass
class OAuthClient:
    """The connected app and the tokens it has handed out (token -> loop time it expires)."""

    static_token: str
    client_id: str
    client_secret: str
    refresh_token: str
    issued: dict[str, float] = field(default_factory=dict)
    refreshes: int = 0

    def __repr__(self) -> str:  # never show the secrets
        return f"OAuthClient(client_id={self.client_id!r}, issued={len(self.issued)})"


OAUTH = web.AppKey("salesforce_oauth", OAuthClient)


def valid_session(request: web.Request, client: OAuthClient) -> bool:
    """``Authorization: Bearer <token>`` (or Salesforce's older ``OAuth <token>``) with a live token."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() not in ("bearer", "oauth") or not token:
        return False
    if hmac.compare_digest(token, client.static_token):
        return True
    expires = client.issued.get(token)
    return expires is not None and asyncio.get_running_loop().time() < expires


def _oauth_error(error: str, description: str, status: int = 400) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


async def oauth_token(request: web.Request) -> web.Response:
    """``POST /services/oauth2/token`` with ``grant_type=refresh_token``: a new access token."""
    client = request.app[OAUTH]
    form = await request.post()
    if form.get("grant_type") != "refresh_token":
        return _oauth_error("unsupported_grant_type", "grant type not supported")
    client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
    if client_id != client.client_id or not hmac.compare_digest(secret, client.client_secret):
        return _oauth_error("invalid_client", "invalid client credentials")
    if not hmac.compare_digest(str(form.get("refresh_token", "")), client.refresh_token):
        return _oauth_error("invalid_grant", "expired access/refresh token")
    state = request.app[SANDBOX]
    token = random_id("00DSANDBOX!", 40)
    client.issued[token] = asyncio.get_running_loop().time() + state.knobs.token_ttl
    client.refreshes += 1
    issued_at = str(int(time.time() * 1000))
    return web.json_response(
        {
            "access_token": token,
            "signature": random_id("", 43),
            "scope": "api refresh_token",
            "instance_url": state.base_url,
            "id": f"{state.base_url}/id/00DSANDBOX000001AAA/005SANDBOX000001AAA",
            "token_type": "Bearer",
            "issued_at": issued_at,
        }
    )
