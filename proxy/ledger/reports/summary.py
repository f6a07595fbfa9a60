"""Usage summaries: calls, tokens, cost and the hidden-prompt share, grouped and totalled.

A long window whose grouping and filters the hourly rollup keeps reads the rollup for its whole
hours and the records only for the partial hours at its edges; anything else reads the records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import ColumnElement, RowMapping, Select, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy.ledger.models import HourlyUsageRow, UsageRow
from proxy.ledger.reports.documents import Summary, UsageGroup, UsageTotals
from proxy.ledger.reports.filters import TIME_DIMENSIONS, Dimension, UsageFilter
from proxy.ledger.reports.sql import iso, truncate, utc

# Shorter windows read the records: they are few, and only they know users, tags and endpoints.
ROLLUP_MIN_WINDOW = timedelta(days=2)
_ROLLUP_DIMENSIONS = frozenset({"team", "model", "upstream", "day", "hour"})
_HOUR = timedelta(hours=1)
_SUMMED = (
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "prompt_system_tokens",
    "prompt_tools_tokens",
)

GroupKey = tuple[str | None, ...]


@dataclass(slots=True)
class _Tally:
    calls: int = 0
    unpriced_calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    prompt_system_tokens: int = 0
    prompt_tools_tokens: int = 0
    # None once any part of the tally came from the rollup, which does not keep it.
    prompt_split_input_tokens: int | None = 0

    def add(self, other: _Tally) -> None:
        for field in fields(self):
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            total = None if mine is None or theirs is None else mine + theirs
            setattr(self, field.name, total)

    def totals(self) -> dict[str, Any]:
        hidden = self.prompt_system_tokens + self.prompt_tools_tokens
        base = self.input_tokens
        if self.prompt_split_input_tokens is not None:
            base = self.prompt_split_input_tokens
        share = round(hidden / base, 6) if base else None
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        return {**values, "prompt_share": share}


async def summarize(
    engine: AsyncEngine, usage: UsageFilter, dimensions: Sequence[Dimension]
) -> Summary:
    """The summary of the calls `usage` keeps, grouped by `dimensions` (none: one group)."""
    tallies: dict[GroupKey, _Tally] = {}
    async with engine.connect() as connection:
        dialect = connection.dialect.name
        source: Literal["records", "rollup"]
        if _reads_rollup(usage, dimensions):
            source = "rollup"
            start, end = _ceil_hour(usage.window.since), _floor_hour(usage.window.until)
            rollup = _rollup_query(usage, dimensions, start, end, dialect)
            await _add(connection, rollup, dimensions, tallies, split_known=False)
            edges = [(usage.window.since, start), (end, usage.window.until)]
            edges = [(first, last) for first, last in edges if first < last]
            if edges:
                records = _records_query(usage, dimensions, edges, dialect)
                await _add(connection, records, dimensions, tallies, split_known=False)
        else:
            source = "records"
            whole = [(usage.window.since, usage.window.until)]
            records = _records_query(usage, dimensions, whole, dialect)
            await _add(connection, records, dimensions, tallies, split_known=True)
    labels = [dimension.label for dimension in dimensions]
    total = _Tally(prompt_split_input_tokens=None if source == "rollup" else 0)
    groups = []
    for key in sorted(tallies, key=_order):
        total.add(tallies[key])
        groups.append(
            UsageGroup(group=dict(zip(labels, key, strict=True)), **tallies[key].totals())
        )
    return Summary(
        source=source,
        since=usage.window.since,
        until=usage.window.until,
        group_by=labels,
        groups=groups,
        totals=UsageTotals(**total.totals()),
    )


def _reads_rollup(usage: UsageFilter, dimensions: Sequence[Dimension]) -> bool:
    long_window = usage.window.until - usage.window.since > ROLLUP_MIN_WINDOW
    rollup_filters = usage.endpoint is None and usage.user is None and not usage.tags
    rollup_dimensions = all(dimension.name in _ROLLUP_DIMENSIONS for dimension in dimensions)
    return long_window and rollup_filters and rollup_dimensions


def _records_query(
    usage: UsageFilter,
    dimensions: Sequence[Dimension],
    ranges: Iterable[tuple[datetime, datetime]],
    dialect: str,
) -> Select[Any]:
    row = UsageRow
    keys = [
        _record_key(dimension, dialect).label(f"k{i}") for i, dimension in enumerate(dimensions)
    ]
    in_window = or_(
        *(and_(row.created_at >= first, row.created_at < last) for first, last in ranges)
    )
    # Grouping by a subquery's columns: Postgres would not match a GROUP BY expression whose bound
    # parameters (a tag key, a time unit) are numbered apart from the select list's.
    inner = (
        select(*keys, row.cost_usd, *(row.__table__.c[name] for name in _SUMMED))
        .where(in_window, *record_conditions(usage))
        .subquery()
    )
    c = inner.c
    split = case((c.prompt_system_tokens.is_not(None), c.input_tokens), else_=0)
    return select(
        *(c[f"k{i}"] for i in range(len(dimensions))),
        func.count().label("calls"),
        func.sum(case((c.cost_usd.is_(None), 1), else_=0)).label("unpriced_calls"),
        func.sum(c.cost_usd).label("cost_usd"),
        *(func.sum(func.coalesce(c[name], 0)).label(name) for name in _SUMMED),
        func.sum(split).label("prompt_split_input_tokens"),
    ).group_by(*(c[f"k{i}"] for i in range(len(dimensions))))


def _rollup_query(
    usage: UsageFilter,
    dimensions: Sequence[Dimension],
    start: datetime,
    end: datetime,
    dialect: str,
) -> Select[Any]:
    hourly = HourlyUsageRow
    keys = [
        _rollup_key(dimension, dialect).label(f"k{i}") for i, dimension in enumerate(dimensions)
    ]
    conditions = [hourly.hour >= start, hourly.hour < end]
    for column, value in (
        (hourly.team, usage.team),
        (hourly.model, usage.model),
        (hourly.upstream, usage.upstream),
    ):
        if value is not None:
            conditions.append(column == value)
    measures = ("calls", "unpriced_calls", "cost_usd", *_SUMMED)
    inner = (
        select(*keys, *(hourly.__table__.c[name] for name in measures))
        .where(*conditions)
        .subquery()
    )
    c = inner.c
    return select(
        *(c[f"k{i}"] for i in range(len(dimensions))),
        *(func.sum(c[name]).label(name) for name in measures),
    ).group_by(*(c[f"k{i}"] for i in range(len(dimensions))))


def record_conditions(usage: UsageFilter) -> list[ColumnElement[bool]]:
    """The conditions on `usage_records` of a filter's columns and tags (not its window)."""
    row = UsageRow
    conditions: list[ColumnElement[bool]] = []
    for column, value in (
        (row.team, usage.team),
        (row.model, usage.model),
        (row.upstream, usage.upstream),
        (row.endpoint, usage.endpoint),
        (row.end_user, usage.user),
    ):
        if value is not None:
            conditions.append(column == value)
    for key, value in usage.tags:
        conditions.append(_tag(key) == value)
    return conditions


def _record_key(dimension: Dimension, dialect: str) -> ColumnElement[Any]:
    row = UsageRow
    if dimension.tag_key is not None:
        return _tag(dimension.tag_key)
    if dimension.name in TIME_DIMENSIONS:
        return truncate(row.created_at, "day" if dimension.name == "day" else "hour", dialect)
    column = "end_user" if dimension.name == "user" else dimension.name
    return row.__table__.c[column]


def _rollup_key(dimension: Dimension, dialect: str) -> ColumnElement[Any]:
    hourly = HourlyUsageRow
    if dimension.name in TIME_DIMENSIONS:
        return truncate(hourly.hour, "day" if dimension.name == "day" else "hour", dialect)
    return hourly.__table__.c[dimension.name]


def _tag(key: str) -> ColumnElement[str | None]:
    value: ColumnElement[str | None] = UsageRow.__table__.c.tags[key].as_string()
    return value


async def _add(
    connection: AsyncConnection,
    statement: Select[Any],
    dimensions: Sequence[Dimension],
    tallies: dict[GroupKey, _Tally],
    *,
    split_known: bool,
) -> None:
    for row in (await connection.execute(statement)).mappings():
        tally = _tally_of(row, split_known)
        if tally.calls == 0:
            continue  # no GROUP BY: the one row of an empty window
        key = tuple(_key_value(dimension, row[f"k{i}"]) for i, dimension in enumerate(dimensions))
        if key in tallies:
            tallies[key].add(tally)
        else:
            tallies[key] = tally


def _tally_of(row: RowMapping, split_known: bool) -> _Tally:
    split = int(row.get("prompt_split_input_tokens") or 0) if split_known else None
    return _Tally(
        calls=int(row["calls"] or 0),
        unpriced_calls=int(row["unpriced_calls"] or 0),
        cost_usd=row["cost_usd"] if row["cost_usd"] is not None else Decimal(0),
        prompt_split_input_tokens=split,
        **{name: int(row[name] or 0) for name in _SUMMED},
    )


def _key_value(dimension: Dimension, value: Any) -> str | None:
    if value is None:
        return None
    if dimension.name in TIME_DIMENSIONS:
        return iso(utc(value))
    return str(value)


def _order(key: GroupKey) -> tuple[tuple[bool, str], ...]:
    # Values in order, a missing user or tag after every value.
    return tuple((value is None, value or "") for value in key)


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(moment: datetime) -> datetime:
    floor = _floor_hour(moment)
    return floor if floor == moment else floor + _HOUR
