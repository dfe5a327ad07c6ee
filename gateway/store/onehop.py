"""SQLite statements in one trip to aiosqlite's thread instead of three or four.

aiosqlite runs the ``sqlite3`` connection in a thread of its own; every call from the event loop is a
hop there and back (a queue put, a thread wake-up, the GIL, ``call_soon_threadsafe``). SQLAlchemy's
aiosqlite cursor makes a hop for each step of a statement: open a cursor, execute, fetch the rows,
close. Under load each hop cost about 1 ms of wall time: a sync page's seven statements spent more
waiting for hops than executing, and at Stripe's 100 calls/s the store, not the upstream, set the pace
(docs/performance.md, "Syncs").

``install`` hooks SQLAlchemy's ``do_execute``/``do_executemany`` (the documented place to run a
statement on the DBAPI cursor oneself) and runs the four steps as one function on aiosqlite's thread,
then hands SQLAlchemy's cursor what its own ``execute`` would have stored. It reaches for two private
names (SQLAlchemy's adapted cursor's ``_connection``, aiosqlite's ``_execute``, the very queue
SQLAlchemy's own adapter uses for ``isolation_level``); when either is missing (another version) it
installs nothing and statements take SQLAlchemy's own path.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_cursor
from sqlalchemy.ext.asyncio import AsyncEngine

_Outcome = tuple[Any, list[Any] | None, int | None, int]  # description, rows, lastrowid, rowcount


def available() -> bool:
    """Whether this aiosqlite and SQLAlchemy have the two names the hook relies on."""
    slots = AsyncAdapt_aiosqlite_cursor.__slots__
    return hasattr(aiosqlite.Connection, "_execute") and {"_connection", "_adapt_connection"} <= set(slots)


def install(engine: AsyncEngine) -> bool:
    """Run the engine's statements in one hop each; False (nothing installed) where that is not possible."""
    if not available():
        return False
    event.listen(engine.sync_engine, "do_execute", _do_execute, retval=True)
    event.listen(engine.sync_engine, "do_execute_no_params", _do_execute_no_params, retval=True)
    event.listen(engine.sync_engine, "do_executemany", _do_executemany, retval=True)
    return True


def _do_execute(cursor: Any, statement: str, parameters: Sequence[Any], _context: Any) -> bool:
    return _run(cursor, lambda c: c.execute(statement, parameters))


def _do_execute_no_params(cursor: Any, statement: str, _context: Any) -> bool:
    return _run(cursor, lambda c: c.execute(statement))


def _do_executemany(cursor: Any, statement: str, parameters: Sequence[Any], _context: Any) -> bool:
    return _run(cursor, lambda c: c.executemany(statement, parameters), many=True)


def _run(cursor: Any, execute: Callable[[Any], object], *, many: bool = False) -> bool:
    """Execute on aiosqlite's thread in one hop; False leaves the statement to SQLAlchemy (server-side cursors)."""
    if type(cursor) is not AsyncAdapt_aiosqlite_cursor:
        return False
    connection = cursor._connection

    def in_thread() -> _Outcome:
        raw = connection._conn.cursor()
        try:
            execute(raw)
            if raw.description and not many:
                return raw.description, raw.fetchall(), None, -1
            return None, None, raw.lastrowid, raw.rowcount
        finally:
            raw.close()

    try:
        description, rows, lastrowid, rowcount = cursor.await_(connection._execute(in_thread))
    except Exception as error:
        cursor._adapt_connection._handle_exception(error)  # as SQLAlchemy's cursor reports it
        raise
    cursor.description = description
    cursor.lastrowid = -1 if rows is not None else lastrowid
    cursor.rowcount = rowcount
    cursor._rows = deque(rows or ())
    return True
