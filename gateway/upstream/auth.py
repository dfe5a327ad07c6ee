"""Upstream auth injection per credential ``auth.type``: pure functions, no I/O.

``inject`` returns the headers to set and the query parameters to add; the client has already
dropped the caller's ``Authorization`` (SPEC.md: it is never sent upstream), so a ``header`` or
``query`` credential never sees it mixed with its own. OAuth2 uses the access token as a bearer
token; refreshing it is ``vault.credentials``' job.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from gateway.domain.models import MASK, Auth


@dataclass(frozen=True)
class Injection:
    """What to add to one upstream request. ``repr`` hides values: they are secrets."""

    headers: dict[str, str] = field(default_factory=dict, repr=False)
    query: dict[str, str] = field(default_factory=dict, repr=False)


def inject(auth: Auth) -> Injection:
    """The headers and query parameters that authenticate a request with ``auth``."""
    if auth.type == "bearer":
        return Injection(headers={"Authorization": f"Bearer {auth.token.get_secret_value()}"})
    if auth.type == "basic":
        pair = f"{auth.username.get_secret_value()}:{auth.password.get_secret_value()}".encode()
        return Injection(headers={"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")})
    if auth.type == "header":
        value = auth.value.get_secret_value()
        return Injection(headers={auth.name: f"{auth.prefix}{value}" if auth.prefix else value})
    if auth.type == "query":
        return Injection(query={auth.name: auth.value.get_secret_value()})
    return Injection(headers={"Authorization": f"Bearer {auth.access_token.get_secret_value()}"})


def secrets(*auths: Auth) -> tuple[str, ...]:
    """Every value of ``auths`` an upstream could quote back (their secret fields and what ``inject``
    sends, as a Basic header's base64), longest first so that a value inside another is masked with it."""
    values: set[str] = set()
    for auth in auths:
        values.update(value.get_secret_value() for value in dict(auth).values() if isinstance(value, SecretStr))
        injection = inject(auth)
        values.update(injection.headers.values(), injection.query.values())
    return tuple(sorted(filter(None, values), key=len, reverse=True))


def scrubbed(value: Any, hidden: Sequence[str]) -> Any:
    """Parsed JSON with each of ``hidden`` replaced by ``***`` in every string (keys too): an upstream's
    error text may quote the key it was sent (a 401 naming the bad API key), and that text becomes a
    sync's ``last_error``, a mutation's error body and log lines, where the log's patterns cannot know it."""
    if isinstance(value, str):
        for secret in hidden:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, list):
        return [scrubbed(item, hidden) for item in value]
    if isinstance(value, dict):
        return {scrubbed(key, hidden): scrubbed(item, hidden) for key, item in value.items()}
    return value
