"""Self-hosted GPU hours are split over each hour's calls by tokens, in the database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from proxy.ledger.gpu_hours import price_gpu_hours
from proxy.ledger.models import GpuHourRow, HourlyUsageRow, TraceRow, UsageRow
from proxy.ledger.rows import row_of
from proxy.ledger.store import LedgerStore
from proxy.metering.usage import Usage, UsageRecord
from tests.ledger.test_writer import record

HOUR = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
COSTS = {"gpu": Decimal("3.60")}


def gpu_call(number: int, tokens: int, minute: int) -> UsageRecord:
    return replace(
        record(number, trace_id="agent-run", cost=None),
        upstream="gpu",
        model="llama-3.1-70b",
        created_at=HOUR + timedelta(minutes=minute),
        usage=Usage(input_tokens=tokens - 20, output_tokens=20),
        gpu_hours_pending=True,
    )


@pytest.fixture
async def engine(engine: AsyncEngine) -> AsyncEngine:
    """The migrated ledger (conftest's `engine`), holding two calls on the GPU endpoint."""
    await LedgerStore(engine).write([row_of(gpu_call(1, 100, 10)), row_of(gpu_call(2, 300, 30))])
    return engine


async def costs(engine: AsyncEngine) -> dict[str, Decimal | None]:
    async with AsyncSession(engine) as session:
        rows = (await session.execute(select(UsageRow))).scalars()
        return {row.request_id: row.cost_usd for row in rows}


async def rollup(engine: AsyncEngine) -> tuple[Decimal, int]:
    async with AsyncSession(engine) as session:
        row = (await session.execute(select(HourlyUsageRow))).scalar_one()
        return row.cost_usd, row.unpriced_calls


async def test_an_hour_is_not_split_before_it_ends(engine: AsyncEngine) -> None:
    assert await price_gpu_hours(engine, COSTS, now=HOUR + timedelta(minutes=50)) == []
    assert set((await costs(engine)).values()) == {None}


async def test_an_ended_hour_is_split_by_tokens(engine: AsyncEngine) -> None:
    changes = await price_gpu_hours(engine, COSTS, now=HOUR + timedelta(minutes=70))
    assert await costs(engine) == {"req-000001": Decimal("0.9"), "req-000002": Decimal("2.7")}
    assert await rollup(engine) == (Decimal("3.6"), 0)
    assert [(c.team, c.model, c.cost_usd) for c in changes] == [
        ("search", "llama-3.1-70b", Decimal("3.6"))
    ]
    async with AsyncSession(engine) as session:
        trace = (await session.execute(select(TraceRow))).scalar_one()
        hour = (await session.execute(select(GpuHourRow))).scalar_one()
    assert (trace.cost_usd, trace.unpriced_calls) == (Decimal("3.6"), 0)
    assert (hour.calls, hour.tokens, hour.idle_cost_usd) == (2, 400, 0)


async def test_each_teams_trace_of_a_shared_trace_id_gets_its_own_calls_share(
    engine: AsyncEngine,
) -> None:
    other_team = replace(gpu_call(3, 400, 40), team="ads")  # same trace id, another team
    await LedgerStore(engine).write([row_of(other_team)])

    await price_gpu_hours(engine, COSTS, now=HOUR + timedelta(minutes=70))

    async with AsyncSession(engine) as session:
        traces = (await session.execute(select(TraceRow).order_by(TraceRow.team))).scalars()
        shares = [(row.team, row.cost_usd, row.unpriced_calls) for row in traces]
    assert shares == [("ads", Decimal("1.8"), 0), ("search", Decimal("1.8"), 0)]


async def test_an_hour_without_calls_is_reported_idle(engine: AsyncEngine) -> None:
    await price_gpu_hours(engine, COSTS, now=HOUR + timedelta(hours=2, minutes=10))
    async with AsyncSession(engine) as session:
        hours = (await session.execute(select(GpuHourRow).order_by(GpuHourRow.hour))).scalars()
        summary = [(row.calls, row.idle_cost_usd) for row in hours]
    assert summary == [(2, 0), (0, Decimal("3.6"))]


async def test_a_late_call_joins_its_hour_which_is_split_again(engine: AsyncEngine) -> None:
    await price_gpu_hours(engine, COSTS, now=HOUR + timedelta(minutes=70))
    await LedgerStore(engine).write([row_of(gpu_call(3, 200, 45))])
    await price_gpu_hours(engine, COSTS, now=HOUR + timedelta(minutes=75))
    assert await costs(engine) == {
        "req-000001": Decimal("0.6"),
        "req-000002": Decimal("1.8"),
        "req-000003": Decimal("1.2"),
    }
    assert await rollup(engine) == (Decimal("3.6"), 0)


async def test_splitting_twice_changes_nothing(engine: AsyncEngine) -> None:
    now = HOUR + timedelta(minutes=70)
    await price_gpu_hours(engine, COSTS, now=now)
    assert await price_gpu_hours(engine, COSTS, now=now) == []
    assert await rollup(engine) == (Decimal("3.6"), 0)
