"""Time: the wall clock, passed in where periods, expiries and forecasts depend on it (tests set
it), and the one way times are read back from the ledger and written into JSON."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(at: datetime) -> datetime:
    """An aware UTC time; a naive one (as SQLite gives them back) is taken to be UTC already."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def iso_z(at: datetime) -> str:
    """ISO 8601 in UTC with `Z`, as JSON documents and headers carry times."""
    return as_utc(at).isoformat().replace("+00:00", "Z")
