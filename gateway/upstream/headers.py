"""Hop-by-hop header filtering (RFC 9110 section 7.6.1), applied to requests and responses alike.

Hop-by-hop headers describe one connection, not the message, so a proxy must not forward them:
the fixed set (``HOP_BY_HOP``, kept with the models, which refuse them as auth headers) plus every
header the ``Connection`` header names.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.domain.models import HOP_BY_HOP


def end_to_end(
    headers: CIMultiDict[str] | CIMultiDictProxy[str], *, drop: Iterable[str] = (), drop_prefix: str = ""
) -> CIMultiDict[str]:
    """A copy of ``headers`` without hop-by-hop ones, those ``Connection`` names, ``drop``, and the names
    starting with ``drop_prefix`` (lower case; checked in the same pass, not in a second one).

    A name repeated in another case (``X-A`` then ``x-a``) keeps its first spelling: aiohttp's client
    tells repeats apart case-sensitively and would keep only the last value of such a pair, while
    every value the client sent must reach the upstream, in order.
    """
    unwanted = _unwanted(tuple(drop))
    connection = headers.getall("Connection", ())
    if connection:
        unwanted = unwanted | {token.strip().lower() for value in connection for token in value.split(",")}
    spelling: dict[str, str] = {}
    kept = []
    for name, value in headers.items():
        lowered = name.lower()
        if lowered not in unwanted and not (drop_prefix and lowered.startswith(drop_prefix)):
            kept.append((spelling.setdefault(lowered, name), value))
    return CIMultiDict(kept)


@functools.lru_cache(maxsize=64)
def _unwanted(drop: tuple[str, ...]) -> frozenset[str]:
    """The fixed set plus ``drop``, lower-cased once per distinct ``drop`` (callers pass constants)."""
    return HOP_BY_HOP | {name.lower() for name in drop}
