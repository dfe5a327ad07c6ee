"""Another writer's commit at the exact moment a store method sends its write: the race, made certain."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only


def before_first(engine: AsyncEngine, prefix: str, other: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run ``other`` (through another engine: another replica) to its end right before ``engine`` sends
    its first statement starting with ``prefix``; the list gets what ``other`` returned, once it ran."""
    ran: list[Any] = []

    def hook(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith(prefix) and not ran:
            ran.append(await_only(other()))

    event.listen(engine.sync_engine, "before_cursor_execute", hook)
    return ran
