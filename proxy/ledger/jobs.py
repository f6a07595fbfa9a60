"""The ledger's periodic jobs (retention, GPU-hour pricing): each on its own schedule, never
stopped by a database that is away for a while."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from proxy.ledger.database import DATABASE_ERRORS

logger = logging.getLogger(__name__)


async def run_every(seconds: float, job: Callable[[], Awaitable[object]], name: str) -> None:
    """Run `job` now and then every `seconds`, logging (not raising) database failures."""
    while True:
        try:
            await job()
        except DATABASE_ERRORS as error:
            logger.warning("ledger job %s failed, retrying in %.0f s: %s", name, seconds, error)
        await asyncio.sleep(seconds)
