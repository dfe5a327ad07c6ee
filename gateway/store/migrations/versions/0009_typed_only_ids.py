"""api_tokens.only_ids: every plain id becomes the typed entries that keep the token's reach

A plain id (``billing``) used to open an object of any kind with that id; tokens may now list only
``<kind>:<id>``. Each plain id becomes ``kind:id`` for every kind that has an object with that id
now, or, where none has, for every kind: the token reaches exactly what it could before. Typed
entries are kept as they are, so running it on already typed lists changes nothing.

Revision ID: 0009_typed_only_ids
Revises: 0008_change_counters
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_typed_only_ids"
down_revision = "0008_change_counters"

# The object kinds and their tables as they are at this revision (a migration must not follow the code).
KINDS = {"sync": "syncs", "credential": "credentials", "consumer": "consumers"}

api_tokens = sa.table(
    "api_tokens",
    sa.column("name", sa.String()),
    sa.column("only_ids", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
)


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(api_tokens.c.name, api_tokens.c.only_ids)).all()
    untyped = {name: only for name, only in rows if only and not all(_is_typed(i) for i in only)}
    if not untyped:
        return
    plain = {i for only in untyped.values() for i in only if not _is_typed(i)}
    existing = {kind: _ids(bind, table, plain) for kind, table in KINDS.items()}
    for name, only in untyped.items():
        bind.execute(sa.update(api_tokens).where(api_tokens.c.name == name).values(only_ids=_typed(only, existing)))


def downgrade() -> None:
    """Nothing to undo: the code of 0008 reads typed entries with the same meaning."""


def _is_typed(entry: str) -> bool:
    kind, colon, _ = entry.partition(":")
    return bool(colon) and kind in KINDS


def _ids(bind: sa.Connection, table: str, candidates: set[str]) -> set[str]:
    """Which of ``candidates`` are ids of ``table``'s objects."""
    id_column = sa.column("id", sa.String())
    query = sa.select(id_column).select_from(sa.table(table, id_column)).where(id_column.in_(sorted(candidates)))
    return set(bind.execute(query).scalars())


def _typed(only: list[str], existing: dict[str, set[str]]) -> list[str]:
    """``only`` with each plain id replaced by its typed entries, in order, without repeats."""
    out: list[str] = []
    for entry in only:
        if _is_typed(entry):
            expanded = [entry]
        else:
            expanded = [f"{kind}:{entry}" for kind in KINDS if entry in existing[kind]]
            expanded = expanded or [f"{kind}:{entry}" for kind in KINDS]
        out.extend(e for e in expanded if e not in out)
    return out
