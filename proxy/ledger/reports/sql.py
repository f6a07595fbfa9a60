"""What reports need that the two engines spell differently: time buckets and read-back times."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, SQLColumnExpression, func

from proxy.clock import as_utc

TimeUnit = Literal["day", "hour"]
_SQLITE_FORMATS: dict[TimeUnit, str] = {"day": "%Y-%m-%d 00:00:00", "hour": "%Y-%m-%d %H:00:00"}


def truncate(
    column: SQLColumnExpression[datetime], unit: TimeUnit, dialect: str
) -> ColumnElement[Any]:
    """The UTC day or hour a time falls in: a naive datetime (Postgres) or its text (SQLite)."""
    if dialect == "postgresql":
        # date_trunc on a timestamptz would cut in the session's time zone.
        return func.date_trunc(unit, func.timezone("UTC", column))
    return func.strftime(_SQLITE_FORMATS[unit], column)


def utc(value: datetime | str) -> datetime:
    """A time read back from either engine as an aware UTC datetime (SQLite's are naive)."""
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


def iso(moment: datetime) -> str:
    """A UTC time as report keys show it, e.g. `2026-11-24T10:00:00Z`."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
