"""Strict JSON for text from outside the gateway: bounded nesting, finite numbers.

``json.loads`` recurses once per level (100,000 ``[`` end in ``RecursionError``) and accepts
``NaN``, ``Infinity`` and ``1e400`` (as ``inf``): no limit, record or PostgreSQL ``jsonb`` column can
hold those, so a value parsed loosely fails later, far from where it came in. Clients' bodies and
upstreams' answers to mutations and syncs are both read through here; each caller maps ``ValueError``
to its own answer (a 400 naming the body; an upstream answer that is not JSON).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# A JSON string (skipped whole) or one bracket: what the depth scan looks at.
_STRING_OR_BRACKET = re.compile(rb'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')
_OPENERS = frozenset(b"[{")


def nests_deeper(raw: bytes, limit: int) -> bool:
    """Whether arrays/objects in ``raw`` nest deeper than ``limit``; a scan that never recurses."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # too few brackets to nest that deep: the common case costs two counts
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(raw):
        byte = raw[match.start()]
        if byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif byte != 0x22:  # a closing bracket; strings are skipped
            depth -= 1
    return False


def loads_finite(raw: bytes | str) -> Any:
    """``json.loads`` refusing numbers out of range and the ``NaN``/``Infinity`` constants (``ValueError``)."""
    return json.loads(raw, parse_float=_finite, parse_constant=_no_constant)


def loads(raw: bytes, *, max_depth: int) -> Any:
    """Strict JSON of ``raw``: ``ValueError`` when it is not JSON, nests deeper than ``max_depth`` or
    holds a number out of range."""
    if nests_deeper(raw, max_depth):
        raise ValueError(f"JSON nests deeper than {max_depth} levels")
    return loads_finite(raw)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")
