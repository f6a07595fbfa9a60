"""Retention: raw rows older than `retention_days` are deleted; the hourly rollup stays.

Deletion runs in small batches (by the `created_at` index) so that it never holds long locks
on a busy ledger.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.ledger.models import UsageRow

_BATCH_ROWS = 5000


async def delete_old_rows(engine: AsyncEngine, retention_days: int, now: datetime) -> int:
    """Delete raw rows created before `now - retention_days`; return how many."""
    cutoff = now - timedelta(days=retention_days)
    deleted = 0
    while True:
        oldest = (
            select(UsageRow.request_id)
            .where(UsageRow.created_at < cutoff)
            .order_by(UsageRow.created_at)
            .limit(_BATCH_ROWS)
        )
        async with engine.begin() as connection:
            result = await connection.execute(
                delete(UsageRow).where(UsageRow.request_id.in_(oldest.scalar_subquery()))
            )
        deleted += result.rowcount
        if result.rowcount < _BATCH_ROWS:
            return deleted
