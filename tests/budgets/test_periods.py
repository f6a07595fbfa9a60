from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.budgets.periods import current_period


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_daily_period_runs_from_utc_midnight_to_the_next() -> None:
    period = current_period("daily", at("2026-11-25T13:45:00+00:00"))

    assert (period.start, period.end) == (
        at("2026-11-25T00:00+00:00"),
        at("2026-11-26T00:00+00:00"),
    )


def test_a_weekly_period_starts_on_monday() -> None:
    period = current_period("weekly", at("2026-11-29T23:59:59+00:00"))  # a Sunday

    assert (period.start, period.end) == (
        at("2026-11-23T00:00+00:00"),
        at("2026-11-30T00:00+00:00"),
    )


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        ("2026-11-25T10:00+00:00", "2026-11-01T00:00+00:00", "2026-12-01T00:00+00:00"),
        ("2026-12-31T23:59+00:00", "2026-12-01T00:00+00:00", "2027-01-01T00:00+00:00"),
        ("2028-02-29T12:00+00:00", "2028-02-01T00:00+00:00", "2028-03-01T00:00+00:00"),
    ],
)
def test_a_monthly_period_is_the_calendar_month(now: str, start: str, end: str) -> None:
    period = current_period("monthly", at(now))

    assert (period.start, period.end) == (at(start), at(end))


def test_a_configured_time_zone_moves_midnight() -> None:
    # 23:30 UTC on the 25th is already the 26th in Paris (UTC+1 in November).
    period = current_period("daily", at("2026-11-25T23:30+00:00"), "Europe/Paris")

    assert (period.start, period.end) == (
        at("2026-11-25T23:00+00:00"),
        at("2026-11-26T23:00+00:00"),
    )


def test_a_day_with_a_daylight_saving_change_is_23_hours_long() -> None:
    period = current_period("daily", at("2026-03-29T12:00+00:00"), "Europe/Paris")

    assert (period.end - period.start).total_seconds() == 23 * 3600


def test_a_window_is_its_own_start_and_end() -> None:
    window = (at("2026-11-20T08:00+01:00"), at("2026-11-27T08:00+01:00"))

    period = current_period("window", at("2026-11-25T00:00+00:00"), window=window)

    assert period.start == datetime(2026, 11, 20, 7, tzinfo=UTC)
    assert period.contains(at("2026-11-27T06:59+00:00"))
    assert not period.contains(at("2026-11-27T07:00+00:00"))
