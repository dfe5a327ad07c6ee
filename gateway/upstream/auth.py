"""Upstream auth injection per credential ``auth.type``: pure functions, no I/O.

``inject`` returns the headers to set and the query parameters to add; the client has already
dropped the caller's ``Authorization`` (SPEC.md: it is never sent upstream), so a ``header`` or
``query`` credential never sees it mixed with its own. OAuth2 uses the access token as a bearer
token; refreshing it is ``vault.credentials``' job.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

from gateway.domain.models import Auth


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
