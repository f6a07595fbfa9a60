"""A budget as the rest of the proxy sees it: plain, frozen data read from the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from proxy.access.errors import InvalidAdminRequest
from proxy.budgets.periods import PERIOD_KINDS, Period, PeriodKind, current_period

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


def window_of(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime] | None:
    """The fixed window two optional ends make (None for neither); one end alone is refused."""
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise InvalidAdminRequest("A window needs both window_start and window_end.")
    return (start, end)


def check_settings(settings: BudgetSettings) -> None:
    """Refuse settings no period could be computed from."""
    if settings.period not in PERIOD_KINDS:
        raise InvalidAdminRequest(
            f"period must be one of {', '.join(PERIOD_KINDS)}.", param="period"
        )
    limit = settings.limit_usd
    if (
        not limit.is_finite()
        or not 0 < limit <= MAX_LIMIT_USD
        or limit != round(limit, LIMIT_DECIMAL_PLACES)
    ):
        raise InvalidAdminRequest(
            f"limit_usd must be a positive amount of at most {MAX_LIMIT_USD} USD, to at most "
            f"{LIMIT_DECIMAL_PLACES} decimal places.",
            param="limit_usd",
        )
    if not settings.thresholds or any(not 0 < t <= 10 for t in settings.thresholds):
        raise InvalidAdminRequest(
            "thresholds are shares of the limit, each above 0 (1.0 is the limit itself).",
            param="thresholds",
        )
    try:
        ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidAdminRequest(
            f"Unknown time zone {settings.timezone!r}.", param="timezone"
        ) from None
    if (settings.period == "window") != (settings.window is not None):
        raise InvalidAdminRequest(
            "A window budget needs window_start and window_end; other periods take neither.",
            param="window_start",
        )
    if settings.window is not None and settings.window[0] >= settings.window[1]:
        raise InvalidAdminRequest("window_start must be before window_end.", param="window_end")


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
