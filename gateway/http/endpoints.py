"""``Endpoint``: one route as both the app's router and the OpenAPI document see it.

Each view module lists its endpoints; ``openapi.add_endpoints`` registers them and the document is
built from the same list, so it cannot drift from what is served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    name: str  # "<route label>.<action>": the label feeds metrics and scope checks
    summary: str
    scope: str | None
    request: Any = None  # a pydantic model or annotated type, or None
    response: Any = None
    statuses: dict[int, str] = field(default_factory=dict)
    raw_body: bool = False  # streamed bytes, not JSON (the proxy)
    success: int = 200  # 201 for creations, 204 (no body) for deletions
