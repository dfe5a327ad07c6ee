"""The provider catalog: providers as data, one TOML file each, validated when the config loads.

A definition says what the gateway must know of an upstream API that is not a credential's own:
its display name, base URL template, the auth types it takes, its default ``rate_limit`` (windows
and rules included), how to read its rate-limit answers (``answers``), and default timeouts. The
package ships one file per provider in ``catalog/``; users add or replace providers with
``providers.catalog_dir`` (same format) or an inline ``[providers.<name>]`` table. Every file is
checked by the models below (unknown keys refused), so a typo stops the start with exit code 2 and
a message naming the file and the key. Pure: no I/O beyond reading the files, no aiohttp.

It sits beside ``config.py``, which loads it at start (the store and the pacer read the config, so
what the config imports must sit below them); the schema is ``domain/catalog.py``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.domain.catalog import Definition, ProviderView
from gateway.domain.models import PROVIDER_PATTERN


@dataclass(frozen=True)
class Entry:
    name: str
    definition: Definition
    origin: str  # "builtin", a file path, or "config"


class Catalog(Mapping[str, Entry]):
    """The loaded catalog, read-only; iteration is by name."""

    def __init__(self, entries: Mapping[str, Entry]) -> None:
        self._entries = dict(sorted(entries.items()))

    def __getitem__(self, name: str) -> Entry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


OVERRIDE_ONLY = frozenset({"shared_rate_limit"})  # config-only keys of a [providers.<name>] table


class CatalogError(ValueError):
    """A catalog file or table is invalid; the message names the file (or table) and the key."""


def builtin_files() -> dict[str, str]:
    """The package's catalog as name -> TOML text (read through importlib so it works from a wheel)."""
    root = resources.files("gateway.providers").joinpath("catalog")
    return {f.name[:-5]: f.read_text(encoding="utf-8") for f in root.iterdir() if f.name.endswith(".toml")}


@lru_cache(maxsize=1)
def builtin() -> dict[str, Entry]:
    """The shipped entries, parsed once per process (they cannot change while it runs)."""
    return {name: parse(name, text, origin="builtin") for name, text in builtin_files().items()}


def parse(name: str, text: str, *, origin: str) -> Entry:
    """One definition from TOML text; ``CatalogError`` names ``origin`` and the bad key."""
    label = f"providers/catalog/{name}.toml" if origin == "builtin" else origin
    if not _valid_name(name):
        raise CatalogError(f"{label}: the provider name {name!r} must match {PROVIDER_PATTERN}")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{label}: not valid TOML: {exc}") from None
    return Entry(name, validated(raw, label=label), origin)


def validated(raw: Mapping[str, Any], *, label: str) -> Definition:
    try:
        return Definition.model_validate(raw)
    except ValidationError as exc:
        raise CatalogError(f"{label}: {_problems(exc)}") from None


def load(catalog_dir: str | None, inline: Mapping[str, Mapping[str, Any]]) -> Catalog:
    """Built-in entries, then ``catalog_dir``'s files (a same name replaces), then the inline tables.

    ``inline`` holds the raw ``[providers.<name>]`` tables (keys given only). A table naming a new
    provider is a full definition; one naming a known provider replaces the keys it gives, except
    ``rate_limit`` and ``timeouts``, which are overrides merged field by field where they are used.
    """
    entries = dict(builtin())
    if catalog_dir:
        directory = Path(catalog_dir)
        if not directory.is_dir():
            raise CatalogError(f"providers.catalog_dir: {catalog_dir} is not a directory")
        for path in sorted(directory.glob("*.toml")):
            entries[path.stem] = parse(path.stem, path.read_text(encoding="utf-8"), origin=str(path))
    for name, table in inline.items():
        table = {k: v for k, v in table.items() if k not in OVERRIDE_ONLY}
        known = entries.get(name)
        if known is None:
            if not _valid_name(name):
                raise CatalogError(f"providers.{name}: the provider name must match {PROVIDER_PATTERN}")
            entries[name] = Entry(name, validated(table, label=f"providers.{name}"), "config")
        elif set(table) - {"rate_limit", "timeouts"}:
            merged = {**known.definition.model_dump(exclude_none=True), **table}
            merged["rate_limit"] = known.definition.rate_limit.model_dump(exclude_none=True)
            merged.pop("timeouts", None)
            if known.definition.timeouts is not None:
                merged["timeouts"] = known.definition.timeouts.model_dump(exclude_none=True)
            entries[name] = Entry(name, validated(merged, label=f"providers.{name}"), known.origin)
    return Catalog(entries)


def _valid_name(name: str) -> bool:
    return re.fullmatch(PROVIDER_PATTERN, name) is not None


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-")) + f": {err['msg']}"
        for err in exc.errors(include_url=False)
    )


def view(entry: Entry) -> ProviderView:
    return ProviderView(name=entry.name, origin=entry.origin, **dict(entry.definition))
