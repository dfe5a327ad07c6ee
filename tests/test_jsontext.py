"""The nesting scan measures JSON's depth exactly, whatever its strings hold (brackets, quotes, escapes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.jsontext import nests_deeper

# Strings made of what could fool a scan: brackets, quotes, backslashes, escapes and non-ASCII text.
TRICKY = st.text(alphabet=st.sampled_from(list('[]{}"\\/ au\u00e9\n')), max_size=6)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY, inner, max_size=3),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@settings(max_examples=1500, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_the_scan_measures_the_depth_json_has(value: Any, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    depth = _depth(value)
    for limit in range(max(depth - 1, 0), depth + 2):
        assert nests_deeper(raw, limit) == (depth > limit), (raw, limit)


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b'{"a": "[[[[", "b": ["{"]}', 2),  # brackets inside strings do not count
        (b'["\\"[[", ["\\\\"], "x"]', 2),  # an escaped quote stays inside; an escaped backslash ends it
        (b'[["\\\\\\"]]"]]', 2),  # an escaped backslash followed by an escaped quote
        (b'["\\u005b", [[]]]', 3),
        (b"[" * 100_000 + b"]" * 100_000, 100_000),
        (b'[[["unterminated [[[[', 7),  # not JSON: the parser would read as deep as the scan counts
    ],
)
def test_the_scan_on_hand_made_text(raw: bytes, depth: int) -> None:
    assert nests_deeper(raw, depth - 1)
    assert not nests_deeper(raw, depth)
