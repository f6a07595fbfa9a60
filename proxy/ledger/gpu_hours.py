"""GPU-hour pricing of self-hosted upstreams, done in the database where every replica's calls are.

Calls of an upstream with `hourly_cost_usd` are stored with no cost and the price entry
`gpu-hour:pending`. Once an hour has ended (plus a grace period for stragglers), its cost is split
over its calls by tokens (`proxy.pricing.gpu_hours.allocate`: exact to 1e-10 USD) and written to
the rows, the hourly rollup and the traces; `gpu_hours` keeps each closed hour, with the idle cost
of an hour that served no call. A record that reaches the database after its hour was closed (a
journal replayed after an outage) joins that hour, which is split again. One transaction per hour,
under a Postgres advisory lock, so replicas never split the same hour twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy.ledger.models import GpuHourRow, HourlyUsageRow, Money, TraceRow, UsageRow
from proxy.ledger.rows import PENDING
from proxy.ledger.spend import SpendKey, adjust_spend, spend_key
from proxy.pricing.gpu_hours import GpuCall, allocate, hour_start

_HOUR = timedelta(hours=1)
_MOST_HOURS_PER_RUN = 24 * 31


def priced_entry(upstream: str) -> str:
    return f"gpu-hour:{upstream}"


@dataclass(frozen=True, slots=True)
class CostChange:
    """Cost newly put on the calls of one (team, model) of an upstream."""

    team: str
    model: str
    upstream: str
    cost_usd: Decimal


async def price_gpu_hours(
    engine: AsyncEngine,
    hourly_costs: Mapping[str, Decimal],
    now: datetime,
    grace: timedelta = timedelta(minutes=5),
) -> list[CostChange]:
    """Split every ended hour not yet split, and every split hour that late calls joined."""
    changes: list[CostChange] = []
    newest_closable = hour_start(now - grace) - _HOUR
    for upstream, hourly_cost in hourly_costs.items():
        for hour, is_new in await _hours_to_split(engine, upstream, newest_closable):
            async with engine.begin() as connection:
                if engine.dialect.name == "postgresql":
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                        {"key": f"gpu-hours:{upstream}"},
                    )
                changes += await _split_hour(connection, upstream, hourly_cost, hour, is_new)
    return changes


async def _hours_to_split(
    engine: AsyncEngine, upstream: str, newest_closable: datetime
) -> list[tuple[datetime, bool]]:
    async with engine.connect() as connection:
        newest_closed = (
            await connection.execute(
                select(func.max(GpuHourRow.hour)).where(GpuHourRow.upstream == upstream)
            )
        ).scalar_one()
        last_closed = None if newest_closed is None else hour_start(newest_closed)
        pending_hours = {
            hour_start(at)
            for at in (
                await connection.execute(
                    select(UsageRow.created_at).where(
                        UsageRow.upstream == upstream, UsageRow.price_entry == PENDING
                    )
                )
            ).scalars()
        }
    late = sorted(hour for hour in pending_hours if last_closed and hour <= last_closed)
    if last_closed is not None:
        first_new = last_closed + _HOUR
    elif pending_hours:
        first_new = min(pending_hours)
    else:
        return []
    new_hours: list[datetime] = []
    hour = first_new
    while hour <= newest_closable and len(new_hours) < _MOST_HOURS_PER_RUN:
        new_hours.append(hour)
        hour += _HOUR
    return [(hour, False) for hour in late] + [(hour, True) for hour in new_hours]


async def _split_hour(
    connection: AsyncConnection,
    upstream: str,
    hourly_cost: Decimal,
    hour: datetime,
    is_new: bool,
) -> list[CostChange]:
    if is_new and await _already_closed(connection, upstream, hour):
        return []  # another replica closed it first
    entry = priced_entry(upstream)
    rows = (
        await connection.execute(
            select(
                UsageRow.request_id,
                UsageRow.team,
                UsageRow.model,
                UsageRow.trace_id,
                UsageRow.input_tokens + UsageRow.output_tokens,
                UsageRow.cost_usd,
                UsageRow.price_entry,
                UsageRow.key_id,
                UsageRow.created_at,
            ).where(
                UsageRow.upstream == upstream,
                UsageRow.created_at >= hour,
                UsageRow.created_at < hour + _HOUR,
                UsageRow.price_entry.in_((PENDING, entry)),
            )
        )
    ).all()
    calls = [GpuCall(row[0], row[1], row[2], int(row[4])) for row in rows]
    shares = allocate(hourly_cost, calls)
    rollup: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [Decimal(0), 0])
    traces: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [Decimal(0), 0])
    spend: dict[SpendKey, list[Any]] = defaultdict(lambda: [Decimal(0), 0])
    updates = []
    for row, share in zip(rows, shares, strict=True):
        was_pending = row[6] == PENDING
        delta = share.cost_usd - (row[5] or Decimal(0))
        updates.append({"key": row[0], "cost": share.cost_usd})
        rollup[row[1], row[2]][0] += delta
        rollup[row[1], row[2]][1] += int(was_pending)
        spend_change = spend[spend_key(row[1], row[7], row[8])]
        spend_change[0] += delta
        spend_change[1] += int(was_pending)
        if row[3] is not None:
            traces[row[1], row[3]][0] += delta
            traces[row[1], row[3]][1] += int(was_pending)
    if updates:
        await connection.execute(
            update(UsageRow)
            .where(UsageRow.request_id == bindparam("key"))
            .values(cost_usd=bindparam("cost", type_=Money()), price_entry=entry),
            updates,
        )
    await _adjust_rollup(connection, upstream, hour, rollup)
    await _adjust_traces(connection, traces)
    await adjust_spend(connection, {key: (change[0], change[1]) for key, change in spend.items()})
    await _record_hour(connection, upstream, hour, hourly_cost, calls, is_new)
    return [
        CostChange(team, model, upstream, delta)
        for (team, model), (delta, _) in rollup.items()
        if delta
    ]


async def _already_closed(connection: AsyncConnection, upstream: str, hour: datetime) -> bool:
    found = await connection.execute(
        select(GpuHourRow.hour).where(GpuHourRow.upstream == upstream, GpuHourRow.hour == hour)
    )
    return found.first() is not None


async def _adjust_rollup(
    connection: AsyncConnection,
    upstream: str,
    hour: datetime,
    changes: Mapping[tuple[str, str], Sequence[Any]],
) -> None:
    for (team, model), (delta, priced) in changes.items():
        await connection.execute(
            update(HourlyUsageRow)
            .where(
                HourlyUsageRow.hour == hour,
                HourlyUsageRow.team == team,
                HourlyUsageRow.model == model,
                HourlyUsageRow.upstream == upstream,
            )
            .values(
                cost_usd=HourlyUsageRow.cost_usd + delta,
                unpriced_calls=HourlyUsageRow.unpriced_calls - priced,
            )
        )


async def _adjust_traces(
    connection: AsyncConnection, changes: Mapping[tuple[str, str], Sequence[Any]]
) -> None:
    for (team, trace_id), (delta, priced) in changes.items():
        await connection.execute(
            update(TraceRow)
            .where(TraceRow.team == team, TraceRow.trace_id == trace_id)
            .values(
                cost_usd=TraceRow.cost_usd + delta,
                unpriced_calls=TraceRow.unpriced_calls - priced,
            )
        )


async def _record_hour(
    connection: AsyncConnection,
    upstream: str,
    hour: datetime,
    hourly_cost: Decimal,
    calls: Sequence[GpuCall],
    is_new: bool,
) -> None:
    values = {
        "upstream": upstream,
        "hour": hour,
        "hourly_cost_usd": hourly_cost,
        "calls": len(calls),
        "tokens": sum(call.tokens for call in calls),
        "idle_cost_usd": Decimal(0) if calls else hourly_cost,
    }
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(GpuHourRow.__table__)
    if not is_new:
        statement = statement.on_conflict_do_update(
            index_elements=["upstream", "hour"],
            set_={name: statement.excluded[name] for name in ("calls", "tokens", "idle_cost_usd")},
        )
    await connection.execute(statement, values)
