"""The spend rollup budgets read: cost per team x key x quarter hour, kept in the ledger's commits.

The ledger store adds each newly inserted call in the same transaction as the call itself
(`LedgerStore._add_to_spend`), so a replayed journal never counts a call twice and a crash never
loses one; the GPU-hour split adds the cost it assigns later (`adjust_spend`). Quarter hours,
because every time zone's midnight falls on one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from proxy.ledger.models import BudgetSpendRow

NO_KEY = ""  # the key_id of calls made without a proxy key

SpendKey = tuple[str, str, datetime]  # team, key id, bucket start


def bucket_of(at: datetime) -> datetime:
    """The quarter hour `at` falls in."""
    return at.replace(minute=at.minute - at.minute % 15, second=0, microsecond=0)


def spend_key(team: str, key_id: str | None, at: datetime) -> SpendKey:
    return (team, key_id or NO_KEY, bucket_of(at))


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
