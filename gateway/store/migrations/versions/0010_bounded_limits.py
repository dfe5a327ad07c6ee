"""credentials.rate_limit / timeouts: stored numbers clamped into the bounds that writes now enforce

Limits and timeouts gained upper and lower bounds after stores could hold them (a window's ``per`` at
most a year, no bucket slower than one call a year, ``timeouts.connect`` at most an hour, ...). Stored
credentials are validated when read, so one out-of-bounds value made every credential listing a 500.
Each such number becomes the nearest value in bounds; a bucket slower than one call a year is raised to
one call a year. Values in bounds are kept as they are, so running it again changes nothing.

Revision ID: 0010_bounded_limits
Revises: 0009_typed_only_ids
"""

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010_bounded_limits"
down_revision = "0009_typed_only_ids"

# The bounds as they are at this revision (a migration must not follow the code): (lowest, highest).
MAX_INTERVAL = 31_622_400
Bounds = dict[str, tuple[float, float]]
BUCKET: Bounds = {"rate": (0.0, 1e9), "per": (0.001, 31_622_400), "burst": (1, 1_000_000_000)}
OVERRIDE: Bounds = {**BUCKET, "max_wait": (0, 3600), "max_concurrency": (1, 1_000_000)}
TIMEOUTS: Bounds = {"connect": (0.0, 3600), "total": (0, 86400), "read": (0.0, 86400)}

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
credentials = sa.table("credentials", sa.column("id", sa.String()), sa.column("rate_limit", Json))
credentials_timeouts = sa.table("credentials", sa.column("id", sa.String()), sa.column("timeouts", Json))


def upgrade() -> None:
    bind = op.get_bind()
    for table, column, clamp in ((credentials, "rate_limit", _limit), (credentials_timeouts, "timeouts", _timeouts)):
        for cid, value in bind.execute(sa.select(table.c.id, table.c[column])).all():
            if isinstance(value, dict) and (fixed := clamp(value)) != value:
                bind.execute(sa.update(table).where(table.c.id == cid).values({column: fixed}))


def downgrade() -> None:
    """Nothing to undo: the clamped values are valid at 0009 too."""


def _clamped(value: dict[str, Any], bounds: Bounds) -> dict[str, Any]:
    out = dict(value)
    for name, (low, high) in bounds.items():
        if isinstance(out.get(name), int | float) and not isinstance(out[name], bool):
            out[name] = min(max(out[name], low), high)
    return out


def _bucket(value: dict[str, Any], bounds: Bounds) -> dict[str, Any]:
    """``value``'s numbers in ``bounds``, and no slower than one call a year when it has both rate and per."""
    out = _clamped(value, bounds)
    rate, per = out.get("rate"), out.get("per")
    if isinstance(rate, int | float) and isinstance(per, int | float) and (rate <= 0 or per / rate > MAX_INTERVAL):
        out["rate"] = per / MAX_INTERVAL
    return out


def _windows(value: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value.get("windows"), list):
        value["windows"] = [_bucket(w, BUCKET) if isinstance(w, dict) else w for w in value["windows"]]
    return value


def _limit(value: dict[str, Any]) -> dict[str, Any]:
    out = _windows(_bucket(value, OVERRIDE))
    if isinstance(out.get("rules"), list):
        out["rules"] = [_windows(_bucket(r, BUCKET)) if isinstance(r, dict) else r for r in out["rules"]]
    return out


def _timeouts(value: dict[str, Any]) -> dict[str, Any]:
    out = _clamped(value, TIMEOUTS)
    for name in ("connect", "read"):  # > 0: a stored 0 would be refused
        if out.get(name) == 0:
            out[name] = 0.001
    return out
