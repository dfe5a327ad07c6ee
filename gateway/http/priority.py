"""A call's place in the pacing queues, decided at the edge from the request and its API token.

``x-gateway-priority: high | normal | low`` (default ``normal`` when absent; anything else, empty
included, is a 400 naming the header) asks for a class; the token's ``priority`` caps it (asking for
more is served at the token's class, never refused). The tenant is the token's name and the weight
the token's ``weight``. The result is set as the request's ``current_share`` (pacing/api.py), so every upstream
call the request makes (one for the proxy, several for a mutation) queues with it, and the response
says which class was applied.
"""

from __future__ import annotations

import functools

from aiohttp import web

from gateway.errors import InvalidRequest
from gateway.http.call import Call
from gateway.http.middlewares import single_header
from gateway.pacing.api import current_share
from gateway.pacing.scheduler import PRIORITIES, Priority, Share

HEADER = "x-gateway-priority"


def apply_share(request: web.Request, call: Call) -> Share:
    """Read the header, cap it at the token's class, and make it the share of this request's calls."""
    principal = call.caller()
    asked = single_header(request, HEADER)  # absent is normal; empty is not a class (400)
    share = _share("normal" if asked is None else asked, principal.priority, principal.name, principal.weight)
    current_share.set(share)
    call.priority = share.priority
    return share


@functools.lru_cache(maxsize=1024)
def _share(header: str, ceiling: Priority, tenant: str, weight: float) -> Share:
    """The share for one (header value, token) pair: the same few pairs come on every call, and a
    ``Share`` is frozen, so it is built once (bounded; a bad header raises and is not remembered)."""
    value = header.strip().lower()
    asked = next((p for p in PRIORITIES if p == value), None)
    if asked is None:
        raise InvalidRequest(f"{HEADER}: must be one of 'high', 'normal', 'low'", field=HEADER)
    priority = max(asked, ceiling, key=PRIORITIES.index)  # the lower of the two classes
    return Share(priority=priority, tenant=tenant, weight=weight)


def stamp(call: Call, response: web.StreamResponse) -> None:
    """Tell the client which class its calls were queued in."""
    priority = call.priority
    if priority is not None:
        response.headers[HEADER] = priority
