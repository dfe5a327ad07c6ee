"""Strict JSON for text from outside the gateway: bounded nesting, finite numbers, in bodies one value per key.

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


class DuplicateKey(ValueError):
    """An object names a key twice. Parsers disagree on which value counts (the first, the last, an
    error), so a proxy, log or audit in front of the gateway could read ``{"scopes": ["proxy"], "scopes":
    ["admin"]}`` as another request than the one applied. ``path`` names the key, e.g. ``records.0.data.id``."""

    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: the key appears twice in one object")
        self.path = path


def loads_finite(raw: bytes | str, *, unique_keys: bool = False) -> Any:
    """``json.loads`` refusing numbers out of range, the ``NaN``/``Infinity`` constants and strings holding
    a lone UTF-16 surrogate (``"\\ud800"``, which no UTF-8 text, hash or ``jsonb`` column can hold);
    with ``unique_keys`` (clients' bodies), objects naming a key twice too (``DuplicateKey``)."""
    hook = _one_value_per_key if unique_keys else None
    try:
        value = json.loads(raw, parse_float=_finite, parse_constant=_no_constant, object_pairs_hook=hook)
    except _Twice:
        raise DuplicateKey(_duplicate_path(json.loads(raw, object_pairs_hook=_marked))) from None
    if _SURROGATE_ESCAPE.search(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")):
        try:  # an escape was seen: exact check on what it decoded to (a pair is fine, a lone one is not)
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)") from None
    return value


def loads(raw: bytes, *, max_depth: int, unique_keys: bool = False) -> Any:
    """Strict JSON of ``raw``: ``ValueError`` when it is not JSON, nests deeper than ``max_depth`` or
    holds a number out of range (or, with ``unique_keys``, a key twice in one object)."""
    if nests_deeper(raw, max_depth):
        raise ValueError(f"JSON nests deeper than {max_depth} levels")
    return loads_finite(raw, unique_keys=unique_keys)


class _Twice(ValueError):
    """Raised by the parse hook; the slower second parse (``_marked``) then finds where."""


class _MarkedObject(dict[str, Any]):
    """An object of the second parse that named ``key`` twice."""

    key = ""


def _one_value_per_key(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Twice
    return obj


def _marked(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _MarkedObject(obj)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.key = key
            break
        seen.add(key)
    return marked


def _duplicate_path(value: Any, path: str = "") -> str:
    """The dotted path of the first key named twice in ``value`` (a parse by ``_marked``); "" if none."""
    if isinstance(value, _MarkedObject):
        return f"{path}.{value.key}" if path else value.key
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _duplicate_path(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return ""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")
