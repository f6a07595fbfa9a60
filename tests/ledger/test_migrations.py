"""The ledger's schema migrations, on SQLite and on Postgres."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from proxy.ledger.migrations import (
    DatabaseNotMigrated,
    UnknownSchemaRevision,
    describe_database,
    downgrade_to_base,
    is_at_head,
    prepare_database,
    upgrade_to_head,
)
from proxy.ledger.models import Base
from tests.support.databases import model_differences, on_connection, sqlite_url, table_names

CLI = str(Path(sys.executable).with_name("metering-proxy"))
LEDGER_TABLES = set(Base.metadata.tables)

# The newest revision in proxy/migrations/versions.
HEAD_REVISION = "0003"


async def run_cli(*arguments: str, database_url: str, cwd: Path) -> tuple[int, str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("METERING_", "OPENAI_"))}
    process = await asyncio.create_subprocess_exec(
        CLI,
        *arguments,
        cwd=cwd,
        env={**environ, "METERING_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_upgrade_to_head_creates_every_ledger_table(database_url: str) -> None:
    await upgrade_to_head(database_url)

    assert await table_names(database_url) == LEDGER_TABLES | {"alembic_version"}


async def test_downgrade_to_base_drops_every_ledger_table(database_url: str) -> None:
    await upgrade_to_head(database_url)

    await downgrade_to_base(database_url)

    assert await table_names(database_url) <= {"alembic_version"}


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    await upgrade_to_head(database_url)

    assert await model_differences(database_url) == []


async def test_empty_database_is_not_at_head(database_url: str) -> None:
    assert not await is_at_head(database_url)


async def test_upgraded_database_is_at_head(database_url: str) -> None:
    await upgrade_to_head(database_url)

    assert await is_at_head(database_url)


async def test_upgrade_reports_the_revisions_before_and_after(database_url: str) -> None:
    upgrade = await upgrade_to_head(database_url)

    assert (upgrade.before, upgrade.after) == ((), (HEAD_REVISION,))


async def test_upgrading_a_database_at_head_changes_nothing(database_url: str) -> None:
    await upgrade_to_head(database_url)

    upgrade = await upgrade_to_head(database_url)

    assert upgrade.before == upgrade.after == (HEAD_REVISION,)


async def test_concurrent_upgrades_both_succeed(database_url: str) -> None:
    await asyncio.gather(upgrade_to_head(database_url), upgrade_to_head(database_url))

    assert await is_at_head(database_url)


async def test_prepare_database_migrates_sqlite_by_itself(sqlite_database_url: str) -> None:
    await prepare_database(sqlite_database_url)

    assert await is_at_head(sqlite_database_url)


async def test_prepare_database_creates_the_sqlite_file_directory(tmp_path: Path) -> None:
    database_url = sqlite_url(tmp_path / "data" / "ledger")

    await prepare_database(database_url)

    assert (tmp_path / "data" / "ledger" / "ledger.db").is_file()


async def test_prepare_database_refuses_an_unmigrated_postgres(postgres_database_url: str) -> None:
    with pytest.raises(DatabaseNotMigrated, match="run `metering-proxy migrate`"):
        await prepare_database(postgres_database_url)


async def test_prepare_database_leaves_an_unmigrated_postgres_unchanged(
    postgres_database_url: str,
) -> None:
    with pytest.raises(DatabaseNotMigrated):
        await prepare_database(postgres_database_url)

    assert await table_names(postgres_database_url) == set()


async def test_refusal_names_host_and_database_but_not_the_password(
    postgres_database_url: str,
) -> None:
    # The local server trusts every connection, so the password is accepted and never checked.
    with_password = postgres_database_url.replace("postgres@", "postgres:s3cret-pw@", 1)

    with pytest.raises(DatabaseNotMigrated) as refusal:
        await prepare_database(with_password)

    message = str(refusal.value)
    assert describe_database(postgres_database_url) in message
    assert "s3cret-pw" not in message


async def test_prepare_database_accepts_a_migrated_postgres(postgres_database_url: str) -> None:
    await upgrade_to_head(postgres_database_url)

    await prepare_database(postgres_database_url)


async def test_prepare_database_refuses_a_schema_from_a_newer_version(database_url: str) -> None:
    await upgrade_to_head(database_url)
    stamp_unknown_revision = text("UPDATE alembic_version SET version_num = '9999'")
    await on_connection(database_url, lambda connection: connection.execute(stamp_unknown_revision))

    with pytest.raises(UnknownSchemaRevision, match="newer version"):
        await prepare_database(database_url)


async def test_migrate_command_migrates_a_fresh_database(database_url: str, tmp_path: Path) -> None:
    status, stdout, stderr = await run_cli("migrate", database_url=database_url, cwd=tmp_path)

    assert status == 0, stderr
    assert HEAD_REVISION in stdout
    assert await is_at_head(database_url)


async def test_serve_refuses_to_start_on_an_unmigrated_postgres(
    postgres_database_url: str, tmp_path: Path
) -> None:
    status, _, stderr = await run_cli(
        "serve", "--port", "18080", database_url=postgres_database_url, cwd=tmp_path
    )

    assert status == 2
    assert "metering-proxy migrate" in stderr
