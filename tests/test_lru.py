"""The bounded cache behind the hot path's per-credential caches: least recently used dropped first."""

from __future__ import annotations

import pytest

from gateway.lru import LRU


def test_the_least_recently_used_entry_is_dropped_first() -> None:
    cache: LRU[str, int] = LRU(3)
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        cache.put(key, value)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("d", 4)
    assert len(cache) == 3
    assert cache.get("b") is None
    assert [cache.get(k) for k in ("a", "c", "d")] == [1, 3, 4]


def test_replacing_a_value_keeps_the_bound_and_pop_and_clear_forget() -> None:
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("a", 2)
    cache.put("b", 3)
    assert len(cache) == 2 and cache.get("a") == 2
    assert cache.pop("a") == 2 and cache.get("a") is None
    cache.clear()
    assert len(cache) == 0 and list(cache) == []


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        LRU(0)


def test_peek_oldest_and_items_look_without_using() -> None:
    cache: LRU[str, int] = LRU(3)
    assert cache.oldest() is None
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        cache.put(key, value)
    assert cache.peek("a") == 1 and cache.oldest() == ("a", 1)  # peek left a the least recently used
    assert cache.items() == [("a", 1), ("b", 2), ("c", 3)]
    cache.get("a")
    assert cache.oldest() == ("b", 2)
