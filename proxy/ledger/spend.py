"""The spend rollup budgets read: cost per team x key x quarter hour, kept in the ledger's commits.

The ledger store adds each newly inserted call in the same transaction as the call itself, so a
replayed journal never counts a call twice and a crash never loses one; the GPU-hour split adds
the cost it assigns later. Quarter hours, because every time zone's midnight falls on one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, update
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.ledger.models import BudgetSpendRow
from proxy.ledger.rows import Row

NO_KEY = ""  # the key_id of calls made without a proxy key

SpendKey = tuple[str, str, datetime]  # team, key id, bucket start


def bucket_of(at: datetime) -> datetime:
    """The quarter hour `at` falls in."""
    return at.replace(minute=at.minute - at.minute % 15, second=0, microsecond=0)


def spend_key(team: str, key_id: str | None, at: datetime) -> SpendKey:
    return (team, key_id or NO_KEY, bucket_of(at))


async def add_spend(
    connection: AsyncConnection, rows: Sequence[Row], insert: Callable[[Table], Any]
) -> None:
    """Add newly stored calls to the rollup (`insert` is the dialect's upserting insert)."""
    totals: dict[SpendKey, list[Any]] = {}
    for row in rows:
        total = totals.setdefault(
            spend_key(row["team"], row["key_id"], row["created_at"]), [0, 0, Decimal(0)]
        )
        total[0] += 1
        if row["cost_usd"] is None:
            total[1] += 1
        else:
            total[2] += row["cost_usd"]
    table: Table = BudgetSpendRow.__table__  # type: ignore[assignment]
    values = [
        {
            "team": team,
            "key_id": key_id,
            "bucket_start": bucket,
            "calls": calls,
            "unpriced_calls": unpriced,
            "cost_usd": cost,
        }
        for (team, key_id, bucket), (calls, unpriced, cost) in totals.items()
    ]
    statement = insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=["team", "key_id", "bucket_start"],
        set_={
            column: table.c[column] + statement.excluded[column]
            for column in ("calls", "unpriced_calls", "cost_usd")
        },
    )
    await connection.execute(statement, values)


async def adjust_spend(
    connection: AsyncConnection, changes: Mapping[SpendKey, tuple[Decimal, int]]
) -> None:
    """Move cost into buckets already counted: (cost added, calls that stopped being unpriced)."""
    for (team, key_id, bucket), (delta, priced) in changes.items():
        await connection.execute(
            update(BudgetSpendRow)
            .where(
                BudgetSpendRow.team == team,
                BudgetSpendRow.key_id == key_id,
                BudgetSpendRow.bucket_start == bucket,
            )
            .values(
                cost_usd=BudgetSpendRow.cost_usd + delta,
                unpriced_calls=BudgetSpendRow.unpriced_calls - priced,
            )
        )
