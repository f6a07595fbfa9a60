"""Raw rows past the retention period go; the hourly rollup keeps their totals."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.models import HourlyUsageRow, UsageRow
from proxy.ledger.retention import delete_old_rows
from proxy.ledger.rows import row_of
from proxy.ledger.store import LedgerStore
from tests.ledger.test_writer import record

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


async def test_rows_past_retention_are_deleted_and_the_rollup_stays(database_url: str) -> None:
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    try:
        old = [replace(record(n), created_at=NOW - timedelta(days=40)) for n in range(7)]
        recent = [replace(record(n), created_at=NOW - timedelta(days=2)) for n in range(7, 10)]
        await LedgerStore(engine).write([row_of(r) for r in old + recent])
        assert await delete_old_rows(engine, retention_days=30, now=NOW) == 7
        async with engine.connect() as connection:
            remaining = (
                await connection.execute(select(func.count()).select_from(UsageRow))
            ).scalar_one()
            calls = (await connection.execute(select(func.sum(HourlyUsageRow.calls)))).scalar_one()
        assert (remaining, calls) == (3, 10)
        assert await delete_old_rows(engine, retention_days=30, now=NOW) == 0
    finally:
        await engine.dispose()
