"""The ledger's schema migrations, on SQLite and on Postgres."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select, text

from proxy.ledger.migrations import (
    DatabaseNotMigrated,
    UnknownSchemaRevision,
    describe_database,
    downgrade_to,
    downgrade_to_base,
    is_at_head,
    prepare_database,
    upgrade_to_head,
)
from proxy.ledger.models import Base, TraceRow, UsageRow
from proxy.ledger.rows import row_of
from tests.ledger.test_reports import call
from tests.support.databases import model_differences, on_connection, sqlite_url, table_names

CLI = str(Path(sys.executable).with_name("metering-proxy"))
LEDGER_TABLES = set(Base.metadata.tables)

# The newest revision in proxy/migrations/versions.
HEAD_REVISION = "0004"


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


def traces_before_0004() -> list[dict[str, Any]]:
    """Rows as revision 0003 kept them: one per trace id, named for its first call's team."""
    return [
        trace_row("gone", "alpha", (8, 0), (8, 30), 2, (200, 20), "2", 1),
        trace_row("pruned", "alpha", (9, 0), (11, 0), 5, (500, 50), "5", 0),
        trace_row("shared", "alpha", (10, 0), (10, 5), 3, (300, 30), "3", 1),
        trace_row("solo", "beta", (10, 0), (10, 0), 1, (100, 10), "1", 0),
    ]  # fmt: skip


# The calls still in `usage_records`: retention deleted those of `gone` and the first three of
# `pruned`.
CALLS_BEFORE_0004 = [
    call("a1", datetime(2026, 11, 2, 10, 0, tzinfo=UTC), "alpha", "gpt-4o", tokens=(100, 0, 10, 0),
         cost="1", trace_id="shared"),
    call("b1", datetime(2026, 11, 2, 10, 2, tzinfo=UTC), "beta", "gpt-4o", tokens=(100, 0, 10, 0),
         cost="2", trace_id="shared"),
    call("a2", datetime(2026, 11, 2, 10, 5, tzinfo=UTC), "alpha", "gpt-4o", tokens=(100, 0, 10, 0),
         trace_id="shared", parent_id="a1"),
    call("c1", datetime(2026, 11, 2, 10, 0, tzinfo=UTC), "beta", "gpt-4o", tokens=(100, 0, 10, 0),
         cost="1", trace_id="solo"),
    call("p4", datetime(2026, 11, 2, 10, 30, tzinfo=UTC), "alpha", "gpt-4o",
         tokens=(100, 0, 10, 0), cost="1", trace_id="pruned"),
    call("p5", datetime(2026, 11, 2, 11, 0, tzinfo=UTC), "beta", "gpt-4o", tokens=(100, 0, 10, 0),
         cost="1", trace_id="pruned"),
]  # fmt: skip


def trace_row(
    trace_id: str,
    team: str,
    started: tuple[int, int],
    last: tuple[int, int],
    calls: int,
    tokens: tuple[int, int],
    cost: str,
    unpriced: int,
) -> dict[str, Any]:
    """A `traces` row on 2 November: first and last call (hour, minute), calls, (input,
    output) tokens, cost, unpriced calls."""
    return {
        "team": team,
        "trace_id": trace_id,
        "started_at": datetime(2026, 11, 2, *started, tzinfo=UTC),
        "last_call_at": datetime(2026, 11, 2, *last, tzinfo=UTC),
        "calls": calls,
        "input_tokens": tokens[0],
        "output_tokens": tokens[1],
        "cost_usd": Decimal(cost),
        "unpriced_calls": unpriced,
    }


async def ledger_at_0003(database_url: str) -> None:
    """A database at revision 0003 holding `CALLS_BEFORE_0004` and their traces as 0003 had."""
    await upgrade_to_head(database_url)
    await downgrade_to(database_url, "0003")

    def fill(connection: Connection) -> None:
        connection.execute(insert(UsageRow), [row_of(record) for record in CALLS_BEFORE_0004])
        connection.execute(insert(TraceRow), traces_before_0004())

    await on_connection(database_url, fill)


async def stored_traces(database_url: str) -> list[dict[str, Any]]:
    def read(connection: Connection) -> list[dict[str, Any]]:
        table = TraceRow.__table__
        rows = connection.execute(select(table).order_by(table.c.team, table.c.trace_id))
        return [
            {
                name: value.replace(tzinfo=UTC) if isinstance(value, datetime) else value
                for name, value in row._asdict().items()
            }
            for row in rows
        ]

    return await on_connection(database_url, read)


async def test_upgrade_to_0004_gives_each_team_its_own_trace_of_a_shared_trace_id(
    database_url: str,
) -> None:
    await ledger_at_0003(database_url)

    await upgrade_to_head(database_url)

    assert await stored_traces(database_url) == [
        # What retention deleted stays with the team of the trace's first call.
        trace_row("gone", "alpha", (8, 0), (8, 30), 2, (200, 20), "2", 1),
        trace_row("pruned", "alpha", (9, 0), (10, 30), 4, (400, 40), "4", 0),
        trace_row("shared", "alpha", (10, 0), (10, 5), 2, (200, 20), "1", 1),
        trace_row("pruned", "beta", (11, 0), (11, 0), 1, (100, 10), "1", 0),
        trace_row("shared", "beta", (10, 2), (10, 2), 1, (100, 10), "2", 0),
        trace_row("solo", "beta", (10, 0), (10, 0), 1, (100, 10), "1", 0),
    ]  # fmt: skip


async def test_downgrade_from_0004_sums_a_trace_ids_teams_back_into_one_row(
    database_url: str,
) -> None:
    await ledger_at_0003(database_url)
    await upgrade_to_head(database_url)

    await downgrade_to(database_url, "0003")

    assert await stored_traces(database_url) == traces_before_0004()
