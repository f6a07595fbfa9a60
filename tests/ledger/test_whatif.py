"""What the ledger's usage would have cost on another model, in batch, or with prompt caching."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.reports.filters import Dimension, ReportError, UsageFilter, Window
from proxy.ledger.rows import row_of
from proxy.ledger.store import LedgerStore
from proxy.ledger.whatif import Scenario, WhatIf
from proxy.pricing.catalog import PriceCatalog
from proxy.settings import PriceOverride
from tests.ledger.test_writer import CREATED_AT, record

# USD per million tokens, set as overrides so that every expected number is worked out by hand.
PRICES = {
    "gpt-4o": PriceOverride(input=Decimal("2.5"), cached_input=Decimal("1.25"), output=Decimal(10)),
    "gpt-4o-mini": PriceOverride(
        input=Decimal("0.15"), cached_input=Decimal("0.075"), output=Decimal("0.6")
    ),
}
WINDOW = UsageFilter(Window(CREATED_AT - timedelta(days=30), CREATED_AT + timedelta(hours=1)))


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Ten gpt-4o calls of team search, four of team ads: 100 input (40 cached), 20 output each,
    with 60 system and 10 tool tokens among the input."""
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    calls = [record(n) for n in range(10)] + [replace(record(n), team="ads") for n in range(10, 14)]
    await LedgerStore(engine).write([row_of(call) for call in calls])
    yield engine
    await engine.dispose()


def what_if(engine: AsyncEngine) -> WhatIf:
    return WhatIf(engine, PriceCatalog(PRICES), upstreams={})


async def test_another_model(ledger: AsyncEngine) -> None:
    report = await what_if(ledger).report(
        Scenario(model="gpt-4o-mini"), replace(WINDOW, team="search"), group_by=[Dimension("team")]
    )
    (search,) = report.groups
    # 600 uncached x 0.15 + 400 cached x 0.075 + 200 output x 0.6, per million tokens.
    assert search.scenario_cost_usd == Decimal("0.00024")
    assert search.actual_cost_usd == Decimal("0.0012345678") * 10
    assert search.calls == 10


async def test_through_the_batch_api(ledger: AsyncEngine) -> None:
    report = await what_if(ledger).report(
        Scenario(model="gpt-4o-mini", batch=True), replace(WINDOW, team="search"), group_by=[]
    )
    assert report.total.scenario_cost_usd == Decimal("0.00012")


async def test_with_the_prompt_cached(ledger: AsyncEngine) -> None:
    report = await what_if(ledger).report(
        Scenario(cache_prompt=True), replace(WINDOW, team="search"), group_by=[]
    )
    # 70 of each call's 100 input tokens are instructions and tools: 700 cached, 300 not.
    assert report.total.scenario_cost_usd == Decimal("0.003625")


async def test_grouped_by_team_and_day(ledger: AsyncEngine) -> None:
    report = await what_if(ledger).report(
        Scenario(model="gpt-4o-mini"), WINDOW, group_by=[Dimension("team"), Dimension("day")]
    )
    day = CREATED_AT.date().isoformat()
    assert [(g.key, g.calls) for g in report.groups] == [
        ({"team": "search", "day": day}, 10),
        ({"team": "ads", "day": day}, 4),
    ]
    assert report.total.calls == 14


async def test_an_unknown_target_price_is_reported_not_zero(ledger: AsyncEngine) -> None:
    report = await what_if(ledger).report(Scenario(model="no-such-model"), WINDOW, group_by=[])
    assert (report.total.unpriced_calls, report.total.scenario_cost_usd) == (14, 0)


async def test_the_window_excludes_other_hours(ledger: AsyncEngine) -> None:
    later = UsageFilter(Window(datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC)))
    report = await what_if(ledger).report(Scenario(model="gpt-4o-mini"), later, group_by=[])
    assert report.groups == []


async def test_groupings_and_filters_the_rollup_lacks_are_refused(ledger: AsyncEngine) -> None:
    with pytest.raises(ReportError, match="groups only by"):
        await what_if(ledger).report(Scenario(), WINDOW, group_by=[Dimension("user")])
    with pytest.raises(ReportError, match="filter by team, model or upstream"):
        await what_if(ledger).report(Scenario(), replace(WINDOW, user="u-1"), group_by=[])
