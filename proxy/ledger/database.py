"""The ledger's database engine, set up for each engine's quirks."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# What an unreachable or failing database raises: SQLAlchemy's errors, and asyncpg's connection
# errors, which are OSErrors.
DATABASE_ERRORS = (SQLAlchemyError, OSError)


def create_ledger_engine(database_url: str) -> AsyncEngine:
    """A pooled async engine; SQLite gets WAL (workers write while reports read) and waits for
    locks rather than failing at once."""
    engine = create_async_engine(database_url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
