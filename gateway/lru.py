"""A dict bounded to a number of entries that forgets the least recently used one first.

The hot path's per-credential caches (decrypted credentials, prepared requests, pacing plans) are
sized above the working set: clearing a full dict at once, as they used to, turned a working set
just over the bound into a miss on nearly every call. Eviction one entry at a time, oldest use
first, degrades gently instead. A plain dict keeps insertion order, so a hit moves its key to the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("an LRU holds at least one entry")
        self.size = size
        self._data: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        """The value (now the most recently used), or None."""
        data = self._data
        value = data.pop(key, None)
        if value is not None:
            data[key] = value
        return value

    def put(self, key: K, value: V) -> None:
        """Store ``value``, forgetting the least recently used entries beyond ``size``."""
        data = self._data
        data.pop(key, None)
        data[key] = value
        while len(data) > self.size:
            del data[next(iter(data))]

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._data))
