"""Budgets in the database: their settings, their spend, and the leases replicas hold on them.

Spend is read from the `budget_spend` rollup the ledger keeps. A lease is a slice of a hard
budget one process holds: it admits calls against it in memory, and asks for more here. The
grant is computed and written under a lock on the budget's row (Postgres `FOR UPDATE`; SQLite
has one writer at a time), from one snapshot of the spend and of every other live lease, so the
leases of all replicas together never exceed what is left of the budget.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy.access import version
from proxy.access.errors import NotFound
from proxy.access.store import team_id_of
from proxy.budgets.model import Budget, BudgetSettings, Spend, check_settings
from proxy.budgets.periods import Period
from proxy.clock import as_utc
from proxy.ledger.models import (
    BudgetLeaseRow,
    BudgetRow,
    BudgetSpendRow,
    KeyRow,
    Money,
    TeamRow,
)


def _budget(row: Any, team: str) -> Budget:
    window = None
    if row.window_start is not None and row.window_end is not None:
        window = (as_utc(row.window_start), as_utc(row.window_end))
    return Budget(
        id=row.id,
        team=team,
        key_id=row.key_id,
        settings=BudgetSettings(
            period=row.period,
            limit_usd=row.limit_usd,
            hard=row.hard,
            thresholds=tuple(Decimal(str(t)) for t in row.thresholds),
            timezone=row.timezone,
            window=window,
        ),
    )


class BudgetStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name

    async def set_budget(
        self, team: str, key_id: str | None, settings: BudgetSettings, now: datetime
    ) -> Budget:
        """Create or replace the budget of a team (or of one of its keys)."""
        check_settings(settings)
        values = {
            "period": settings.period,
            "limit_usd": settings.limit_usd,
            "hard": settings.hard,
            "thresholds": [str(t) for t in sorted(settings.thresholds)],
            "timezone": settings.timezone,
            "window_start": settings.window[0] if settings.window else None,
            "window_end": settings.window[1] if settings.window else None,
            "updated_at": now,
        }
        async with self._engine.begin() as connection:
            # The team's row lock keeps two processes from both creating its budget.
            team_id = await team_id_of(connection, team, lock=True)
            if key_id is not None:
                await _check_key_of_team(connection, key_id, team_id, team)
            existing = await connection.scalar(select(BudgetRow.id).where(_owner(team_id, key_id)))
            if existing is None:
                await connection.execute(
                    insert(BudgetRow),
                    {"team_id": team_id, "key_id": key_id, "created_at": now, **values},
                )
            else:
                await connection.execute(
                    update(BudgetRow).where(BudgetRow.id == existing).values(**values)
                )
            row = (await connection.execute(select(BudgetRow).where(_owner(team_id, key_id)))).one()
            await version.bump(connection)
        return _budget(row, team)

    async def get_budget(self, team: str, key_id: str | None = None) -> Budget:
        async with self._engine.connect() as connection:
            team_id = await team_id_of(connection, team)
            row = (
                await connection.execute(select(BudgetRow).where(_owner(team_id, key_id)))
            ).first()
        if row is None:
            owner = f"team {team!r}" if key_id is None else f"key {key_id}"
            raise NotFound(f"No budget is set for {owner}.")
        return _budget(row, team)

    async def delete_budget(self, team: str, key_id: str | None = None) -> None:
        async with self._engine.begin() as connection:
            team_id = await team_id_of(connection, team)
            deleted = await connection.execute(delete(BudgetRow).where(_owner(team_id, key_id)))
            if deleted.rowcount == 0:
                owner = f"team {team!r}" if key_id is None else f"key {key_id}"
                raise NotFound(f"No budget is set for {owner}.")
            await version.bump(connection)

    async def list_budgets(self) -> list[Budget]:
        async with self._engine.connect() as connection:
            return await budgets_in(connection)

    async def spend(self, budget: Budget, period: Period) -> Spend:
        async with self._engine.connect() as connection:
            found = (
                await connection.execute(
                    select(
                        func.coalesce(func.sum(BudgetSpendRow.cost_usd), 0),
                        func.coalesce(func.sum(BudgetSpendRow.calls), 0),
                        func.coalesce(func.sum(BudgetSpendRow.unpriced_calls), 0),
                    ).where(_spend_of(budget, period.start, period.end))
                )
            ).one()
        return Spend(cost_usd=_money(found[0]), calls=int(found[1]), unpriced_calls=int(found[2]))

    async def spend_between(self, budget: Budget, start: datetime, end: datetime) -> Decimal:
        """Cost in [start, end): the burn rate a forecast extrapolates."""
        async with self._engine.connect() as connection:
            found = await connection.scalar(
                select(func.coalesce(func.sum(BudgetSpendRow.cost_usd), 0)).where(
                    _spend_of(budget, start, end)
                )
            )
        return _money(found)

    async def leased(self, budget_id: int, period_start: datetime, now: datetime) -> Decimal:
        """What every process holds of the budget right now."""
        async with self._engine.connect() as connection:
            found = await connection.scalar(
                select(func.coalesce(func.sum(BudgetLeaseRow.amount_usd), 0)).where(
                    _live_leases(budget_id, period_start, now)
                )
            )
        return _money(found)

    async def grant(
        self,
        budget: Budget,
        period: Period,
        holder: str,
        held: Decimal,
        wanted: Decimal,
        needed: Decimal,
        expires_at: datetime,
        now: datetime,
    ) -> Decimal:
        """Grow `holder`'s lease from `held` by up to `wanted`, by at least `needed`, or by
        nothing (0 is returned) when the rest of the budget cannot cover `needed`."""
        async with self._engine.begin() as connection:
            # Every grant on this budget waits here for the one before it to commit.
            await connection.execute(
                select(BudgetRow.id).where(BudgetRow.id == budget.id).with_for_update()
            )
            others = (
                select(func.coalesce(func.sum(BudgetLeaseRow.amount_usd), 0))
                .where(_live_leases(budget.id, period.start, now), BudgetLeaseRow.holder != holder)
                .scalar_subquery()
            )
            spent = (
                select(func.coalesce(func.sum(BudgetSpendRow.cost_usd), 0))
                .where(_spend_of(budget, period.start, period.end))
                .scalar_subquery()
            )
            # One statement, one snapshot: a lease is only ever shrunk after the spend that
            # replaces it is committed, so no snapshot sees neither.
            found = (await connection.execute(select(spent, others))).one()
            left = budget.settings.limit_usd - _money(found[0]) - _money(found[1]) - held
            if left < needed:
                return Decimal(0)
            granted = min(wanted, left)
            await self._write_lease(
                connection, budget.id, period.start, holder, held + granted, expires_at
            )
        return granted

    async def renew(
        self,
        budget_id: int,
        period_start: datetime,
        holder: str,
        held: Decimal,
        expires_at: datetime,
    ) -> None:
        """Shrink (never grow) a lease to what is still held, and keep it alive."""
        smaller = func.min if self._dialect == "sqlite" else func.least
        async with self._engine.begin() as connection:
            if held <= 0:
                await connection.execute(
                    delete(BudgetLeaseRow).where(
                        BudgetLeaseRow.budget_id == budget_id,
                        BudgetLeaseRow.period_start == period_start,
                        BudgetLeaseRow.holder == holder,
                    )
                )
                return
            await connection.execute(
                update(BudgetLeaseRow)
                .where(
                    BudgetLeaseRow.budget_id == budget_id,
                    BudgetLeaseRow.period_start == period_start,
                    BudgetLeaseRow.holder == holder,
                )
                .values(
                    # Bound as Money: on SQLite that is a count of 1e-10 USD, not the Decimal.
                    amount_usd=smaller(BudgetLeaseRow.amount_usd, bindparam(None, held, Money())),
                    expires_at=expires_at,
                )
            )

    async def _write_lease(
        self,
        connection: AsyncConnection,
        budget_id: int,
        period_start: datetime,
        holder: str,
        amount: Decimal,
        expires_at: datetime,
    ) -> None:
        insert = (postgresql if self._dialect == "postgresql" else sqlite).insert
        statement = insert(BudgetLeaseRow.__table__).values(
            budget_id=budget_id,
            period_start=period_start,
            holder=holder,
            amount_usd=amount,
            expires_at=expires_at,
        )
        statement = statement.on_conflict_do_update(
            index_elements=["budget_id", "period_start", "holder"],
            set_={"amount_usd": amount, "expires_at": expires_at},
        )
        await connection.execute(statement)

    async def drop_expired_leases(self, now: datetime) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(delete(BudgetLeaseRow).where(BudgetLeaseRow.expires_at < now))


async def budgets_in(connection: AsyncConnection) -> list[Budget]:
    statement = select(BudgetRow, TeamRow.name.label("team")).join(
        TeamRow, BudgetRow.team_id == TeamRow.id
    )
    rows = (await connection.execute(statement.order_by(BudgetRow.id))).all()
    return [_budget(row, row.team) for row in rows]


def _owner(team_id: int, key_id: str | None) -> ColumnElement[bool]:
    if key_id is None:
        return and_(BudgetRow.team_id == team_id, BudgetRow.key_id.is_(None))
    return and_(BudgetRow.team_id == team_id, BudgetRow.key_id == key_id)


def _spend_of(budget: Budget, start: datetime, end: datetime) -> ColumnElement[bool]:
    condition = and_(
        BudgetSpendRow.team == budget.team,
        BudgetSpendRow.bucket_start >= start,
        BudgetSpendRow.bucket_start < end,
    )
    if budget.key_id is not None:
        condition = and_(condition, BudgetSpendRow.key_id == budget.key_id)
    return condition


def _live_leases(budget_id: int, period_start: datetime, now: datetime) -> ColumnElement[bool]:
    return and_(
        BudgetLeaseRow.budget_id == budget_id,
        BudgetLeaseRow.period_start == period_start,
        BudgetLeaseRow.expires_at >= now,
    )


def _money(value: Any) -> Decimal:
    """A sum of Money columns (typed Money, so already a Decimal on both engines)."""
    return Decimal(value or 0)


async def _check_key_of_team(
    connection: AsyncConnection, key_id: str, team_id: int, team: str
) -> None:
    owner = await connection.scalar(select(KeyRow.team_id).where(KeyRow.id == key_id))
    if owner != team_id:
        raise NotFound(f"Team {team!r} has no key with id {key_id!r}.", param="key_id")
