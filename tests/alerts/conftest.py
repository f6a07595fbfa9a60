"""Fixtures for alert tests: a migrated ledger with one team budget, and a webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.access.store import AccessStore
from proxy.alerts.model import Alert, AlertKind, Ranked
from proxy.budgets.model import BudgetSettings
from proxy.budgets.store import BudgetStore
from proxy.ids import new_request_id
from tests.support.alert_receiver import AlertReceiver, serve_alert_receiver

TEAM = "search"
PERIOD_START = datetime(2026, 11, 1, tzinfo=UTC)
CREATED_AT = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: datetime = CREATED_AT) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def budget_id(engine: AsyncEngine) -> int:
    await AccessStore(engine).create_team(TEAM, CREATED_AT)
    budget = await BudgetStore(engine).set_budget(
        TEAM, None, BudgetSettings(period="monthly", limit_usd=Decimal("10")), CREATED_AT
    )
    return budget.id


@pytest.fixture
def receiver() -> Iterator[tuple[AlertReceiver, str]]:
    with serve_alert_receiver() as served:
        yield served


def make_alert(
    budget_id: int,
    threshold: str = "0.8",
    kind: AlertKind = "threshold",
    created_at: datetime = CREATED_AT,
    period_start: datetime = PERIOD_START,
    team: str = TEAM,
) -> Alert:
    return Alert(
        id=new_request_id(),
        budget_id=budget_id,
        team=team,
        key_id=None,
        kind=kind,
        threshold=Decimal(threshold),
        period="monthly",
        period_start=period_start,
        period_end=datetime(2026, 12, 1, tzinfo=UTC),
        spend_usd=Decimal("8.0312345678"),
        limit_usd=Decimal("10.0000000000"),
        unpriced_calls=3,
        forecast_at=datetime(2026, 11, 27, 14, 0, tzinfo=UTC) if kind == "forecast" else None,
        top_models=(
            Ranked("gpt-4o", Decimal("6.5"), 120),
            Ranked("gpt-4o-mini", Decimal("1.5312345678"), 1),
        ),
        top_users=(Ranked("alice@example.com", Decimal("5"), 80),),
        created_at=created_at,
    )
