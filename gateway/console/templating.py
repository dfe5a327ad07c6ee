"""Jinja filters the templates use to show times and durations the same way everywhere."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def clock(epoch: float | None) -> str:
    """Epoch seconds as ``HH:MM:SS`` UTC (recent calls and pauses are today's)."""
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S")


def when(value: datetime | str | None) -> str:
    """A stored timestamp as ``YYYY-MM-DD HH:MM UTC``."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def number(value: Any, digits: int = 1) -> str:
    """A number for a table cell, ``—`` when unknown."""
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.{digits}f}"
    return str(int(value)) if isinstance(value, float) else str(value)


FILTERS: dict[str, Callable[..., str]] = {"clock": clock, "when": when, "number": number}
