"""The ledger's schema: Alembic run from our code, at startup and by `metering-proxy migrate`.

Every function that touches the database is async and opens its own short-lived engine; Alembic
runs on that engine's connection through `AsyncConnection.run_sync`, so they work inside a running
event loop (the app's lifespan) and, through `asyncio.run`, from synchronous code (the CLI).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, event, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

_SCRIPT_LOCATION = Path(__file__).resolve().parent.parent / "migrations"
# Any constant does, as long as every process that migrates uses the same one.
_POSTGRES_MIGRATION_LOCK = 7_315_420_911_706_034_449

T = TypeVar("T")


class SchemaStatus(enum.Enum):
    """Where a database's schema stands against this package's migrations."""

    EMPTY = "empty"
    BEHIND = "behind"
    AT_HEAD = "at head"
    # A revision this package does not know: a newer metering-proxy migrated the database.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Upgrade:
    """What `upgrade_to_head` did: the database's revisions before and after."""

    before: tuple[str, ...]
    after: tuple[str, ...]


class DatabaseSchemaError(RuntimeError):
    """The ledger database's schema is not one this metering-proxy can use."""


class DatabaseNotMigrated(DatabaseSchemaError):
    """A Postgres ledger is empty or behind: an operator runs `metering-proxy migrate`."""

    def __init__(self, database_url: str, status: SchemaStatus) -> None:
        state = "has no schema yet" if status is SchemaStatus.EMPTY else "has an older schema"
        super().__init__(
            f"the ledger database {describe_database(database_url)} {state}; run "
            "`metering-proxy migrate` with the same METERING_DATABASE_URL, then start again"
        )


class UnknownSchemaRevision(DatabaseSchemaError):
    """The database was migrated by a newer metering-proxy than this one."""

    def __init__(self, database_url: str) -> None:
        super().__init__(
            f"the ledger database {describe_database(database_url)} has a schema revision this "
            "metering-proxy does not know: a newer version migrated it; run that one or newer"
        )


def describe_database(database_url: str) -> str:
    """The URL as messages show it: without its password or query string."""
    url = make_url(database_url)
    shown = URL.create(
        url.drivername, username=url.username, host=url.host, port=url.port, database=url.database
    )
    return shown.render_as_string(hide_password=False)


async def schema_status(database_url: str) -> SchemaStatus:
    """Compare the database's Alembic revision with this package's head."""
    return await in_migration_transaction(database_url, _status)


async def is_at_head(database_url: str) -> bool:
    """Whether the database's schema is this package's latest."""
    return await schema_status(database_url) is SchemaStatus.AT_HEAD


async def upgrade_to_head(database_url: str) -> Upgrade:
    """Apply every migration the database lacks; a database already at head is left alone."""

    def upgrade(connection: Connection) -> Upgrade:
        if _status(connection) is SchemaStatus.UNKNOWN:
            raise UnknownSchemaRevision(database_url)
        before = _current_revisions(connection)
        command.upgrade(_alembic_config(connection), "head")
        return Upgrade(before, _current_revisions(connection))

    return await in_migration_transaction(database_url, upgrade)


async def downgrade_to_base(database_url: str) -> None:
    """Undo every migration: the ledger's tables are dropped with their data."""
    await downgrade_to(database_url, "base")


async def downgrade_to(database_url: str, revision: str) -> None:
    """Undo the migrations after `revision` (what an older metering-proxy needs)."""

    def downgrade(connection: Connection) -> None:
        command.downgrade(_alembic_config(connection), revision)

    await in_migration_transaction(database_url, downgrade)


async def prepare_database(database_url: str) -> None:
    """Bring an embedded SQLite ledger to head; refuse any other database not at head.

    Raises `DatabaseNotMigrated` or `UnknownSchemaRevision`: on a shared database, changing the
    schema is an operator's decision (`metering-proxy migrate`), not a side effect of a start.
    """
    status = await schema_status(database_url)
    if status is SchemaStatus.AT_HEAD:
        return
    if status is SchemaStatus.UNKNOWN:
        raise UnknownSchemaRevision(database_url)
    if not _is_sqlite(database_url):
        raise DatabaseNotMigrated(database_url, status)
    await upgrade_to_head(database_url)


async def in_migration_transaction(database_url: str, work: Callable[[Connection], T]) -> T:
    """Run `work` on a connection in one transaction that no other migrating process shares."""
    engine = _engine(database_url)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Replicas started together wait here for the first one instead of racing it.
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_MIGRATION_LOCK}
                )
            return await connection.run_sync(work)
    finally:
        await engine.dispose()


def _is_sqlite(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "sqlite"


def _engine(database_url: str) -> AsyncEngine:
    engine = create_async_engine(database_url, poolclass=NullPool)
    if engine.dialect.name == "sqlite":
        _make_parent_directory(engine.url)
        # sqlite3 would run DDL outside any transaction and let two processes migrate at once:
        # SQLAlchemy emits the BEGIN instead, IMMEDIATE so that it takes the write lock first.
        event.listen(engine.sync_engine, "connect", _leave_begin_to_sqlalchemy)
        event.listen(engine.sync_engine, "begin", _begin_immediate)
    return engine


def _make_parent_directory(url: URL) -> None:
    path = url.database
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _leave_begin_to_sqlalchemy(dbapi_connection: Any, connection_record: Any) -> None:
    dbapi_connection.isolation_level = None


def _begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    # Main options go through ConfigParser interpolation, where a bare % would be an error.
    config.set_main_option("script_location", str(_SCRIPT_LOCATION).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def _current_revisions(connection: Connection) -> tuple[str, ...]:
    return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def _status(connection: Connection) -> SchemaStatus:
    current = set(_current_revisions(connection))
    scripts = ScriptDirectory(str(_SCRIPT_LOCATION))
    if not current:
        return SchemaStatus.EMPTY
    if current == set(scripts.get_heads()):
        return SchemaStatus.AT_HEAD
    known = {script.revision for script in scripts.walk_revisions()}
    return SchemaStatus.BEHIND if current <= known else SchemaStatus.UNKNOWN
