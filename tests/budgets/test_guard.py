"""What a process admits against its lease stays set aside in the database, even when a renewal
and a grant of the same lease overlap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.access.store import AccessStore
from proxy.budgets.guard import BudgetGuard, LeasePolicy
from proxy.budgets.model import Budget, BudgetSettings
from proxy.budgets.store import BudgetStore

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


class GrantThatWaits(BudgetStore):
    """The real store, whose grants wait (after committing) until the test lets them return."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.committed = asyncio.Event()
        self.may_return = asyncio.Event()

    async def grant(self, *args: object, **kwargs: object) -> Decimal:
        granted = await super().grant(*args, **kwargs)  # type: ignore[arg-type]
        self.committed.set()
        await self.may_return.wait()
        return granted


async def hard_budget(engine: AsyncEngine, limit: str) -> Budget:
    await AccessStore(engine).create_team("search", NOW)
    settings = BudgetSettings(period="daily", limit_usd=Decimal(limit), hard=True)
    return await BudgetStore(engine).set_budget("search", None, settings, NOW)


@pytest.mark.parametrize("held_before", ["0", "5"])
async def test_a_renewal_during_a_grant_does_not_shrink_the_granted_lease(
    engine: AsyncEngine, held_before: str
) -> None:
    budget = await hard_budget(engine, "100")
    store = GrantThatWaits(engine)
    guard = BudgetGuard(store, "replica-a", LeasePolicy(slice_share=Decimal("0.1")))
    if held_before != "0":
        store.may_return.set()
        await guard.reserve([budget], Decimal(held_before), NOW)
        store.committed.clear()
        store.may_return.clear()

    # A call needs more than the lease holds: its grant commits, then stalls before returning...
    reserving = asyncio.create_task(guard.reserve([budget], Decimal(20), NOW))
    await store.committed.wait()
    # ...while the periodic heartbeat writes the lease as it stood before the grant.
    renewing = asyncio.create_task(guard.renew(NOW + timedelta(seconds=6)))
    await asyncio.sleep(0.05)
    store.may_return.set()
    await asyncio.gather(reserving, renewing)

    # Both calls are under way: the database must still set aside what they reserved.
    period = budget.period_at(NOW)
    leased = await store.leased(budget.id, period.start, NOW)
    assert leased >= Decimal(20) + Decimal(held_before)
