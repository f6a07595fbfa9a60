"""A budget as the rest of the proxy sees it: plain, frozen data read from the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from proxy.budgets.periods import Period, PeriodKind, current_period

DEFAULT_THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
# Money is stored to 1e-10 USD, on SQLite as a 64-bit count of those: a finer limit would round
# (maybe to 0) and one above about 9.2e8 overflow.
MAX_LIMIT_USD = Decimal(100_000_000)
LIMIT_DECIMAL_PLACES = 10


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    period: PeriodKind
    limit_usd: Decimal
    hard: bool = False
    thresholds: tuple[Decimal, ...] = DEFAULT_THRESHOLDS
    timezone: str = "UTC"
    window: tuple[datetime, datetime] | None = None  # for period "window" only


@dataclass(frozen=True, slots=True)
class Budget:
    id: int
    team: str
    key_id: str | None  # None: the whole team's budget
    settings: BudgetSettings

    def period_at(self, now: datetime) -> Period:
        return current_period(
            self.settings.period, now, self.settings.timezone, self.settings.window
        )

    @property
    def label(self) -> str:
        owner = f"team {self.team!r}"
        return owner if self.key_id is None else f"key {self.key_id} of {owner}"


@dataclass(frozen=True, slots=True)
class Spend:
    """What a budget's period has cost so far, as the ledger has it."""

    cost_usd: Decimal = Decimal(0)
    calls: int = 0
    unpriced_calls: int = 0
