"""The ledger's database engine, set up for each engine's quirks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# What an unreachable or failing database raises: SQLAlchemy's errors, and asyncpg's connection
# errors and statement timeouts (TimeoutError), which are OSErrors.
DATABASE_ERRORS = (SQLAlchemyError, OSError)


def create_ledger_engine(
    database_url: str, statement_timeout_seconds: float | None = None
) -> AsyncEngine:
    """A pooled async engine; SQLite gets WAL (workers write while reports read) and waits for
    locks rather than failing at once.

    On Postgres, a statement still unanswered after `statement_timeout_seconds` raises
    `TimeoutError` (and is cancelled on the server): a lock nobody releases, or a server that
    stopped answering without closing the connection, would otherwise hold the ledger writer
    (and every background task) forever, without a single failure to show for it.
    """
    connect_args: dict[str, Any] = {}
    postgres = make_url(database_url).get_backend_name() == "postgresql"
    if statement_timeout_seconds is not None and postgres:
        # asyncpg's timeout is kept by the client, so it also ends a wait on a dead network.
        connect_args["command_timeout"] = statement_timeout_seconds
    engine = create_async_engine(database_url, pool_pre_ping=True, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
