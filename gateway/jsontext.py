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

# Everything but brackets and quotes (deleted), and braces folded into brackets: what the depth scan reads.
_NOT_MARKS = bytes(b for b in range(256) if b not in b'[]{}"')
_FOLD = bytes.maketrans(b"{}", b"[]")
_QUOTED = re.compile(rb'"[^"]*"')
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # cheap pre-check; most bodies have none


def nests_deeper(raw: bytes, limit: int) -> bool:
    """Whether arrays/objects in ``raw`` nest deeper than ``limit``; a scan that never recurses.

    It steps through the brackets outside strings only, which whole-buffer passes find
    (``_brackets``): a Python step per string made it cost more than parsing a 100-record page. For
    text that is not JSON it agrees with the parser's own reading up to where the text stops being
    JSON, as far as the parser ever recurses.
    """
    depth = 0
    for byte in _brackets(raw):
        if byte == 0x5B:  # [
            depth += 1
            if depth > limit:
                return True
        elif byte == 0x5D:  # ]
            depth -= 1
    return False


def _brackets(raw: bytes) -> bytes:
    """The brackets of ``raw`` outside its strings, in order (``{}`` as ``[]``).

    Escapes go first, left to right as JSON pairs them (an escaped backslash, then an escaped quote),
    so no string holds a quote; then each string's text goes. When no string holds a bracket, every
    string is now ``""`` and one ``replace`` removes them all; a quote left over means one did (or a
    string is unterminated), and the strings are cut out one by one.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = raw.translate(_FOLD, _NOT_MARKS)
    brackets = marks.replace(b'""', b"")
    return brackets if b'"' not in brackets else _QUOTED.sub(b"", marks)


def loads_finite(raw: bytes | str) -> Any:
    """``json.loads`` refusing numbers out of range, the ``NaN``/``Infinity`` constants and strings holding
    a lone UTF-16 surrogate (``"\\ud800"``, which no UTF-8 text, hash or ``jsonb`` column can hold)."""
    value = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    if _SURROGATE_ESCAPE.search(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")):
        try:  # an escape was seen: exact check on what it decoded to (a pair is fine, a lone one is not)
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
    return value


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
