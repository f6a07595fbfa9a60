"""The in-memory copy of keys and budgets that admits requests without a query each.

It is reloaded whole when the access version moves: at once after a change made through this
process, and within `poll_seconds` after one made through another replica or the CLI.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.access import version
from proxy.access.store import Key, key_of_row
from proxy.budgets.model import Budget
from proxy.budgets.store import budgets_in
from proxy.ledger.database import DATABASE_ERRORS
from proxy.ledger.models import KeyRow, TeamRow

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AccessSnapshot:
    version: int = -1
    keys_by_hash: dict[str, Key] = field(default_factory=dict)
    team_budgets: dict[str, Budget] = field(default_factory=dict)
    key_budgets: dict[str, Budget] = field(default_factory=dict)

    def budgets_of(self, team: str, key_id: str | None) -> list[Budget]:
        """The team's budget and the key's, those that exist."""
        found = [self.team_budgets.get(team), self.key_budgets.get(key_id) if key_id else None]
        return [budget for budget in found if budget is not None]

    @property
    def budgets(self) -> list[Budget]:
        return [*self.team_budgets.values(), *self.key_budgets.values()]


class AccessDirectory:
    def __init__(self, engine: AsyncEngine, poll_seconds: float = 1.0) -> None:
        self._engine = engine
        self._poll_seconds = poll_seconds
        self.snapshot = AccessSnapshot()
        self._reloading = asyncio.Lock()

    async def reload(self) -> None:
        """Read everything again (one transaction, so keys and budgets agree)."""
        async with self._reloading, self._engine.connect() as connection:
            current = await version.current(connection)
            rows = (
                await connection.execute(
                    select(KeyRow, TeamRow.name.label("team")).join(
                        TeamRow, KeyRow.team_id == TeamRow.id
                    )
                )
            ).all()
            budgets = await budgets_in(connection)
        self.snapshot = AccessSnapshot(
            version=current,
            keys_by_hash={row.key_hash: key_of_row(row, row.team) for row in rows},
            team_budgets={b.team: b for b in budgets if b.key_id is None},
            key_budgets={b.key_id: b for b in budgets if b.key_id is not None},
        )

    async def reload_if_changed(self) -> bool:
        async with self._engine.connect() as connection:
            current = await version.current(connection)
        if current == self.snapshot.version:
            return False
        await self.reload()
        return True

    async def poll(self) -> None:
        """Reload whenever the version moves; a database outage keeps the last copy."""
        failing = False
        while True:
            try:
                await self.reload_if_changed()
                failing = False
            except DATABASE_ERRORS as error:
                if not failing:
                    logger.warning("cannot reload keys and budgets, keeping the last: %s", error)
                failing = True
            await asyncio.sleep(self._poll_seconds)
