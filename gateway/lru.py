"""A dict bounded to a number of entries that forgets the least recently used one first.

The one bounded cache of the code base: the hot path's per-credential caches (decrypted credentials,
whose objects carry what calls derive from them; an Airtable credential's pacing plans per base), the
console's call series, the log's redaction memo, the API token caches and the bad-token table. The
per-credential ones are sized above the working set: clearing a full dict at once, as they used to,
turned a working set just over the bound into a miss on nearly every call. Eviction one entry at a
time, oldest use first, degrades gently instead. A plain dict keeps insertion order, so a hit moves its
key to the end.
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

    def peek(self, key: K) -> V | None:
        """The value, or None, without making it the most recently used."""
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        """Store ``value``, forgetting the least recently used entries beyond ``size``."""
        data = self._data
        data.pop(key, None)
        data[key] = value
        while len(data) > self.size:
            del data[next(iter(data))]

    def oldest(self) -> tuple[K, V] | None:
        """The least recently used entry, left where it is (None when empty)."""
        for item in self._data.items():
            return item
        return None

    def items(self) -> list[tuple[K, V]]:
        """Every entry, least recently used first, none of them used by this."""
        return list(self._data.items())

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._data))
