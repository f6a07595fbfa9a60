"""Throwaway ledger databases: a SQLite file, or a new database on the local Postgres server."""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from proxy.ledger.models import Base

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"
# Every database these helpers create starts with this, so a leftover is easy to recognise.
TEST_DATABASE_PREFIX = "metering_test_"

T = TypeVar("T")


def postgres_is_reachable(timeout_seconds: float = 2.0) -> bool:
    """Whether something accepts connections on the test Postgres address."""
    try:
        with socket.create_connection((POSTGRES_HOST, POSTGRES_PORT), timeout=timeout_seconds):
            return True
    except OSError:
        return False


def sqlite_url(directory: Path) -> str:
    """A SQLite ledger file (not yet created) in `directory`."""
    return f"sqlite+aiosqlite:///{directory / 'ledger.db'}"


@asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """Create an empty Postgres database, yield its URL, then drop it (forcing out sessions)."""
    name = f"{TEST_DATABASE_PREFIX}{secrets.token_hex(8)}"
    await _administer(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        await _administer(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _administer(statement: str) -> None:
    # CREATE and DROP DATABASE cannot run inside the database they name: go through `postgres`.
    connection = await asyncpg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user=POSTGRES_USER, database="postgres"
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def on_connection(database_url: str, work: Callable[[Connection], T]) -> T:
    """Run `work` on a synchronous view of a connection to the database, then commit."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


async def table_names(database_url: str) -> set[str]:
    """The tables in the database's default schema."""
    return await on_connection(database_url, lambda sync: set(inspect(sync).get_table_names()))


async def model_differences(database_url: str) -> list[Any]:
    """What `alembic revision --autogenerate` would add to make the database match the models."""

    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))

    return await on_connection(database_url, compare)
