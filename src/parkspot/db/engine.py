"""One engine factory for asyncpg/PostgreSQL and aiosqlite/SQLite.

On SQLite every connection gets WAL, foreign keys and a busy timeout, and a transaction
opened for a write request starts with ``BEGIN IMMEDIATE`` so writers queue on the
database lock instead of failing when they upgrade from a read lock. ``is_unavailable``
tells an error of a database that is away (down, restarting, the connection lost) from one
of a wrong statement.
"""

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from parkspot.config import Settings

WRITE_OPTION = "parkspot_write"


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        return _sqlite_engine(url, settings)
    return create_async_engine(
        url,
        # Errors must not quote parameters (password hashes, key digests) into the logs.
        hide_parameters=True,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        # No pre-ping (a round trip per request): a connection found dead fails its request
        # with 503 (``is_unavailable``) and SQLAlchemy then replaces the pool's connections.
        pool_timeout=10,
        connect_args={
            "timeout": settings.database_connect_timeout_seconds,
            "command_timeout": settings.database_statement_timeout_seconds,
        },
    )


# PostgreSQL SQLSTATEs of a server that cannot serve for now, besides class 08 (connection
# exception): shutting down, crashed, starting up or recovering, out of connections.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def is_unavailable(exc: BaseException) -> bool:
    """Whether the error says the database cannot be reached or is going away (a retry
    later may succeed) rather than that a statement is wrong. SQLite's "database is
    locked" is an OperationalError too."""
    if isinstance(exc, OperationalError | PoolTimeoutError | OSError):
        # OSError: asyncpg raises ConnectionRefusedError, socket.gaierror and TimeoutError
        # (connect and statement timeouts) unwrapped.
        return True
    if not isinstance(exc, DBAPIError):
        return False
    # Set when the driver reports the connection closed: the server went away mid-statement
    # or mid-commit (asyncpg's ConnectionDoesNotExistError, "connection is closed").
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return isinstance(sqlstate, str) and (
        sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES
    )


def log_failure(log: logging.Logger, message: str, exc: BaseException) -> None:
    """Logs a background loop's failed pass: one line while the database is away (it
    recurs every pass until it is back), the traceback for anything else."""
    if is_unavailable(exc):
        log.warning("%s: database unavailable (%s)", message, exc.__class__.__name__)
    else:
        log.error(message, exc_info=exc)


def _sqlite_engine(url: str, settings: Settings) -> AsyncEngine:
    path = url.split(":///", 1)[1] if ":///" in url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url, hide_parameters=True, connect_args={"timeout": settings.sqlite_busy_timeout_ms / 1000}
    )
    busy_timeout = settings.sqlite_busy_timeout_ms

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout:d}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(WRITE_OPTION):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine
