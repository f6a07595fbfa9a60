"""Postgres takes a batch in one SQL statement, SQLite through the portable path: both must leave
the same rows and the same rollups, whatever the batches hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.models import LARGEST_MONEY, BudgetSpendRow, HourlyUsageRow, TraceRow, UsageRow
from proxy.ledger.rows import Row, row_of
from proxy.ledger.store import LedgerStore
from proxy.metering.usage import Price, PromptSplit, Usage, UsageRecord

# Around the edges of a quarter hour, an hour and a day.
MOMENTS = (
    datetime(2026, 11, 24, 10, 14, 59, 999_999, tzinfo=UTC),
    datetime(2026, 11, 24, 10, 15, tzinfo=UTC),
    datetime(2026, 11, 24, 10, 59, 59, tzinfo=UTC),
    datetime(2026, 11, 24, 11, 0, tzinfo=UTC),
    datetime(2026, 11, 24, 23, 52, 30, tzinfo=UTC),
    datetime(2026, 11, 25, 0, 7, tzinfo=UTC),
)


def varied_record(number: int) -> Row:
    """Calls that differ in every way the rollups group or sum by."""
    priced = number % 5 != 0
    return row_of(
        UsageRecord(
            request_id=f"req-{number:04d}",
            created_at=MOMENTS[number % len(MOMENTS)] + timedelta(microseconds=number),
            team=("search", "support")[number % 2],
            key_id=(None, "key-a", "key-b")[number % 3],
            upstream=("openai", "llama")[number % 2],
            endpoint="chat",
            model=("gpt-4o", "gpt-4o-mini", "llama-3")[number % 3],
            status="200",
            usage=Usage(
                input_tokens=100 + number,
                cached_input_tokens=number % 7,
                output_tokens=20 + number % 11,
                reasoning_tokens=number % 4,
                images=number % 2,
            ),
            price=Price(Decimal("0.0000001234") * (number + 1), "config:x") if priced else None,
            latency_seconds=0.25,
            trace_id=None if number % 4 == 0 else f"trace-{number % 6}",
            tags={"feature": f"f{number % 3}", "ünïcode": "✓"},
            prompt_split=PromptSplit(system=10, tools=number % 3, history=5, latest=1)
            if number % 2
            else None,
        )
    )


async def stored_tables(database_url: str, batches: list[list[Row]]) -> dict[str, list[Any]]:
    """Write the batches (each twice: a replay), then read back every table they touch."""
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    store = LedgerStore(engine)
    tables: dict[str, list[Any]] = {}
    try:
        inserted = [await store.write(batch) for batch in batches]
        replayed = [await store.write(batch) for batch in batches]
        tables["inserted"] = [inserted, replayed]
        async with engine.connect() as connection:
            for model, order in (
                (UsageRow, UsageRow.request_id),
                (HourlyUsageRow, (HourlyUsageRow.hour, HourlyUsageRow.team, HourlyUsageRow.model)),
                (TraceRow, TraceRow.trace_id),
                (
                    BudgetSpendRow,
                    (BudgetSpendRow.team, BudgetSpendRow.key_id, BudgetSpendRow.bucket_start),
                ),
            ):
                ordering = order if isinstance(order, tuple) else (order,)
                result = await connection.execute(select(model.__table__).order_by(*ordering))
                tables[model.__tablename__] = [_comparable(row._asdict()) for row in result]
    finally:
        await engine.dispose()
    return tables


def _comparable(row: dict[str, Any]) -> dict[str, Any]:
    """SQLite hands datetimes back without their zone; all of them are UTC."""
    return {
        name: value.replace(tzinfo=UTC) if isinstance(value, datetime) else value
        for name, value in row.items()
    }


async def test_both_engines_store_the_same_rows_and_rollups(
    sqlite_database_url: str, postgres_database_url: str
) -> None:
    rows = [varied_record(number) for number in range(60)]
    # Uneven batches, one of which carries a call twice (a line journaled twice).
    batches = [rows[:7], [*rows[7:40], rows[8]], rows[40:]]
    on_sqlite = await stored_tables(sqlite_database_url, batches)
    on_postgres = await stored_tables(postgres_database_url, batches)

    assert on_postgres["inserted"] == [[7, 33, 20], [0, 0, 0]]
    assert on_postgres == on_sqlite
    assert len(on_postgres["usage_records"]) == 60
    assert sum(hour["calls"] for hour in on_postgres["hourly_usage"]) == 60
    buckets = {
        (spend["bucket_start"].hour, spend["bucket_start"].minute)
        for spend in on_postgres["budget_spend"]
    }
    assert buckets == {(10, 0), (10, 15), (10, 45), (11, 0), (23, 45), (0, 0)}
    assert sum(spend["unpriced_calls"] for spend in on_postgres["budget_spend"]) == 12


async def test_what_a_column_cannot_hold_is_cut_to_fit_not_refused_with_the_batch(
    database_url: str,
) -> None:
    # A client's absurd model and user names, NULs, and an upstream's absurd count: Postgres
    # would refuse each, and with it the whole batch, again at every retry.
    absurd = UsageRecord(
        request_id="req-absurd",
        created_at=MOMENTS[0],
        team="search",
        upstream="openai",
        endpoint="chat",
        model="m" * 300,
        status="200",
        usage=Usage(input_tokens=1 << 70, output_tokens=-(1 << 70), images=1 << 40),
        price=Price(Decimal("1e15"), "config:absurd"),
        latency_seconds=0.25,
        user="user\x00" + "u" * 300,
        tags={"feature\x00": "a\x00b"},
    )
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    try:
        store = LedgerStore(engine)
        assert await store.write([row_of(absurd), varied_record(1)]) == 2
        async with engine.connect() as connection:
            stored = (
                await connection.execute(
                    select(UsageRow).where(UsageRow.request_id == "req-absurd")
                )
            ).one()
    finally:
        await engine.dispose()
    assert (stored.model, stored.end_user) == ("m" * 256, "user" + "u" * 252)
    assert (stored.input_tokens, stored.output_tokens) == ((1 << 63) - 1, -((1 << 63) - 1))
    assert stored.images == (1 << 31) - 1
    assert stored.cost_usd == LARGEST_MONEY
    assert stored.tags == {"feature": "ab"}
