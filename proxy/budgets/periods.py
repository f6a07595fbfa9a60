"""Budget periods: when the current one started and when it ends.

Daily, weekly (from Monday) and monthly periods start at midnight in the budget's time zone
(UTC unless one is configured); a fixed window is just its two instants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

PeriodKind = Literal["daily", "weekly", "monthly", "window"]
PERIOD_KINDS: tuple[PeriodKind, ...] = ("daily", "weekly", "monthly", "window")


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def elapsed_share(self, at: datetime) -> float:
        return (at - self.start) / (self.end - self.start)


def current_period(
    kind: PeriodKind,
    now: datetime,
    timezone: str = "UTC",
    window: tuple[datetime, datetime] | None = None,
) -> Period:
    """The period of `kind` that contains `now` (for a window: the window itself)."""
    if kind == "window":
        if window is None:
            raise ValueError("a window budget needs its start and end")
        return Period(window[0].astimezone(UTC), window[1].astimezone(UTC))
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "daily":
        start, end = midnight, _add_days(midnight, 1)
    elif kind == "weekly":
        start = _add_days(midnight, -midnight.weekday())
        end = _add_days(start, 7)
    else:
        start = midnight.replace(day=1)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else (start.replace(month=start.month + 1))
        )
    return Period(_utc(start, zone), _utc(end, zone))


def _add_days(local_midnight: datetime, days: int) -> datetime:
    # Calendar arithmetic on the wall clock: a day with a DST change is 23 or 25 hours long.
    return (local_midnight.replace(tzinfo=None) + timedelta(days=days)).replace(
        tzinfo=local_midnight.tzinfo
    )


def _utc(local: datetime, zone: ZoneInfo) -> datetime:
    return local.replace(tzinfo=zone).astimezone(UTC)
