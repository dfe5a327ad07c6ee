"""Explaining a store that cannot be opened: one line naming ``store.url`` (password masked) and the fix.

A missing PostgreSQL database used to end ``migrate``, ``serve`` and ``tokens list`` in a 100-line
traceback while a closed port gave one clean line; every way of failing to open the store now reads
like the latter, and says what to do (``createdb ...``, start the server, fix the user).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import GatewayError

# What opening a connection raises: asyncpg's own errors come unwrapped from SQLAlchemy's connect.
OPEN_ERRORS = (SQLAlchemyError, OSError, asyncpg.PostgresError)


class StoreUnavailable(GatewayError):
    status = 503
    code = "store_unavailable"


@asynccontextmanager
async def open_connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection to the store, or ``StoreUnavailable`` explaining why there is none."""
    conn = engine.connect()
    try:
        await conn.start()
    except OPEN_ERRORS as exc:
        raise StoreUnavailable(describe(engine.url, exc)) from None
    try:
        yield conn
    finally:
        await conn.close()


def describe(url: URL, exc: BaseException) -> str:
    """``store.url postgresql://app:***@db:5432/gw: database "gw" does not exist; create it: createdb ...``."""
    shown = url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)
    return f"store.url {shown}: {_reason(url, exc)}"


def _reason(url: URL, exc: BaseException) -> str:
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    if url.get_backend_name() == "sqlite":
        cause = getattr(exc, "orig", exc)
        return f"cannot open the SQLite file {url.database!r} ({cause}); create its directory or fix store.url"
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return f'database "{url.database}" does not exist; create it: {_createdb(url)} (then `gateway migrate`)'
    if isinstance(exc, (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError)):
        return f"PostgreSQL refused the login ({exc}); fix the user or password in store.url"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host {url.host!r}; fix the host in store.url"
    if isinstance(exc, OSError):
        return f"nothing accepts connections at {where} ({exc.strerror or exc}); start PostgreSQL or fix store.url"
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"cannot open the store ({exc.__class__.__name__}: {first_line[:200]})"


def _createdb(url: URL) -> str:
    options = [f"-h {url.host}" if url.host else "", f"-p {url.port}" if url.port else ""]
    options.append(f"-U {url.username}" if url.username else "")
    return " ".join(["createdb", *(o for o in options if o), str(url.database)])
