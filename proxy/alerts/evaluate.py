"""Deciding budget alerts: a threshold crossed, or a burn rate that will cross the limit before
the period ends.

Each alert is recorded in the database under a unique (budget, period, kind, threshold), and
only the process whose insert wins hands it to the sinks: a restart or a second replica finds it
already there. Checks run every `check_seconds`, and soon after the ledger stores new calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute

from proxy.access.directory import AccessDirectory
from proxy.alerts.model import Alert, AlertKind, Ranked
from proxy.alerts.store import AlertStore
from proxy.budgets.model import Budget, Spend
from proxy.budgets.periods import Period
from proxy.budgets.store import BudgetStore
from proxy.clock import Clock
from proxy.ids import new_request_id
from proxy.ledger.database import DATABASE_ERRORS
from proxy.ledger.models import UsageRow
from proxy.metrics import BudgetMetrics

logger = logging.getLogger(__name__)

TOP_ENTRIES = 5
_LIMIT = Decimal(1)
# After a nudge, the next check waits at least this long: a busy ledger stores a batch every
# few milliseconds, and budgets need not be re-read that often.
_SHORTEST_GAP_SECONDS = 1.0


class AlertEvaluator:
    def __init__(
        self,
        engine: AsyncEngine,
        directory: AccessDirectory,
        alerts: AlertStore,
        metrics: BudgetMetrics,
        clock: Clock,
        forecast_window: timedelta,
        on_recorded: Callable[[], None],
    ) -> None:
        self._engine = engine
        self._budgets = BudgetStore(engine)
        self._directory = directory
        self._alerts = alerts
        self._metrics = metrics
        self._clock = clock
        self._forecast_window = forecast_window
        self._on_recorded = on_recorded
        self._decided: set[tuple[int, datetime, str, Decimal]] = set()
        self._nudged = asyncio.Event()

    def nudge(self) -> None:
        """New spend reached the ledger: check soon."""
        self._nudged.set()

    async def run(self, check_seconds: float) -> None:
        while True:
            try:
                await self.check()
            except DATABASE_ERRORS as error:
                logger.warning("cannot check budgets for alerts: %s", error)
            await asyncio.sleep(min(_SHORTEST_GAP_SECONDS, check_seconds))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._nudged.wait(), check_seconds)
            self._nudged.clear()

    async def check(self) -> list[Alert]:
        """Check every budget once; return the alerts this process recorded."""
        now = self._clock()
        recorded = []
        for budget in self._directory.snapshot.budgets:
            period = budget.period_at(now)
            spend = await self._budgets.spend(budget, period)
            if budget.key_id is None:
                labels = (budget.team, budget.settings.period)
                self._metrics.spend.labels(*labels).set(float(spend.cost_usd))
                self._metrics.limit.labels(*labels).set(float(budget.settings.limit_usd))
            for kind, threshold, forecast_at in await self._due(budget, period, spend, now):
                alert = await self._alert(budget, period, spend, kind, threshold, forecast_at, now)
                inserted = await self._alerts.record(alert)
                self._decided.add((budget.id, period.start, kind, threshold))
                if inserted:
                    self._metrics.alerts.labels(budget.team, kind).inc()
                    recorded.append(alert)
        if recorded:
            self._on_recorded()
        return recorded

    async def _due(
        self, budget: Budget, period: Period, spend: Spend, now: datetime
    ) -> list[tuple[AlertKind, Decimal, datetime | None]]:
        limit = budget.settings.limit_usd
        due: list[tuple[AlertKind, Decimal, datetime | None]] = [
            ("threshold", threshold, None)
            for threshold in budget.settings.thresholds
            if spend.cost_usd >= limit * threshold
            and (budget.id, period.start, "threshold", threshold) not in self._decided
        ]
        if spend.cost_usd < limit and (budget.id, period.start, "forecast", _LIMIT) not in (
            self._decided
        ):
            forecast_at = await self._forecast(budget, period, spend, now)
            if forecast_at is not None:
                due.append(("forecast", _LIMIT, forecast_at))
        return due

    async def _forecast(
        self, budget: Budget, period: Period, spend: Spend, now: datetime
    ) -> datetime | None:
        """When the spend reaches the limit at the last hours' burn rate, if before the end."""
        window_start = now - self._forecast_window
        recent = await self._budgets.spend_between(budget, window_start, now)
        if recent <= 0:
            return None
        per_second = recent / Decimal(self._forecast_window.total_seconds())
        left = budget.settings.limit_usd - spend.cost_usd
        reached_at = now + timedelta(seconds=float(left / per_second))
        return reached_at if reached_at < period.end else None

    async def _alert(
        self,
        budget: Budget,
        period: Period,
        spend: Spend,
        kind: AlertKind,
        threshold: Decimal,
        forecast_at: datetime | None,
        now: datetime,
    ) -> Alert:
        return Alert(
            id="alert_" + new_request_id(),
            budget_id=budget.id,
            team=budget.team,
            key_id=budget.key_id,
            kind=kind,
            threshold=threshold,
            period=budget.settings.period,
            period_start=period.start,
            period_end=period.end,
            spend_usd=spend.cost_usd,
            limit_usd=budget.settings.limit_usd,
            unpriced_calls=spend.unpriced_calls,
            forecast_at=forecast_at,
            top_models=await self._top(UsageRow.model, budget, period),
            top_users=await self._top(UsageRow.end_user, budget, period),
            created_at=now,
        )

    async def _top(
        self, column: InstrumentedAttribute[Any], budget: Budget, period: Period
    ) -> tuple[Ranked, ...]:
        """The period's most expensive models (or end users) of the budget's calls."""
        condition = and_(
            UsageRow.team == budget.team,
            UsageRow.created_at >= period.start,
            UsageRow.created_at < period.end,
            UsageRow.cost_usd.is_not(None),
            column.is_not(None),
        )
        if budget.key_id is not None:
            condition = and_(condition, UsageRow.key_id == budget.key_id)
        cost = func.sum(UsageRow.cost_usd)
        statement = (
            select(column, cost, func.count())
            .where(condition)
            .group_by(column)
            .order_by(cost.desc())
            .limit(TOP_ENTRIES)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return tuple(Ranked(str(row[0]), Decimal(row[1] or 0), int(row[2])) for row in rows)
