"""Retention: raw rows older than `retention_days` are deleted; the hourly rollup stays.

Deletion runs in small batches (by the `created_at` index) so that it never holds long locks
on a busy ledger.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.ledger.models import UsageRow

logger = logging.getLogger(__name__)

_BATCH_ROWS = 5000
_EVERY_SECONDS = 3600.0


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


async def keep_deleting_old_rows(engine: AsyncEngine, retention_days: int) -> None:
    """The background task: once an hour, forever."""
    while True:
        try:
            deleted = await delete_old_rows(engine, retention_days, datetime.now(UTC))
            if deleted:
                logger.info("retention: deleted %d rows past %d days", deleted, retention_days)
        except (SQLAlchemyError, OSError) as error:
            logger.warning("retention: could not delete old rows: %s", error)
        await asyncio.sleep(_EVERY_SECONDS)
