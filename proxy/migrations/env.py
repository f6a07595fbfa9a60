"""Alembic's environment for the ledger: the models' metadata, async engines, SQLite batch mode.

`proxy.ledger.migrations` lends its own connection (`config.attributes["connection"]`); the
`alembic` command line of a developer gets one here, for `METERING_DATABASE_URL`.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from proxy.ledger.migrations import in_migration_transaction
from proxy.ledger.models import Base
from proxy.settings import load_settings

config = context.config


def _run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most of a table in place: batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_offline(database_url: str) -> None:
    context.configure(
        url=database_url,
        target_metadata=Base.metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    lent: Connection | None = config.attributes.get("connection")
    if lent is not None:
        _run_migrations(lent)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    database_url = load_settings().environment.database_url
    if context.is_offline_mode():
        _run_offline(database_url)
    else:
        asyncio.run(in_migration_transaction(database_url, _run_migrations))


_main()
