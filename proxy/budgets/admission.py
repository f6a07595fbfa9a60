"""Admission: the checks a call passes after routing and before it is forwarded.

The key's model allow-list, the per-trace limits, and the reservation of the call's estimated
cost on its hard budgets, all from memory (a budget lease may need one query when used up).
`settle` undoes what `admit` took, once the call's record is settled.
"""

from __future__ import annotations

from decimal import Decimal

from proxy.access.directory import AccessSnapshot
from proxy.budgets.estimate import estimated_cost, estimated_usage
from proxy.budgets.guard import NO_RESERVATION, BudgetGuard
from proxy.budgets.trace_limits import TraceLimiter
from proxy.clock import Clock
from proxy.metering.exchange import Exchange
from proxy.metering.extractors import EXTRACTORS
from proxy.metering.usage import UsageRecord
from proxy.pricing.catalog import PriceCatalog

# Even a call whose cost cannot be estimated reserves this much, so that a budget already
# spent refuses it too.
_LEAST_RESERVATION = Decimal("0.000001")


class Admission:
    def __init__(
        self,
        guard: BudgetGuard,
        catalog: PriceCatalog,
        trace_limiter: TraceLimiter | None,
        output_allowance_tokens: int,
        clock: Clock,
    ) -> None:
        self._guard = guard
        self._catalog = catalog
        self._trace_limiter = trace_limiter
        self._output_allowance = output_allowance_tokens
        self._clock = clock

    async def admit(self, exchange: Exchange, access: AccessSnapshot) -> None:
        """Admit the routed call, or raise the error its client gets."""
        caller = exchange.caller
        if exchange.model:
            caller.check_model(exchange.model)
        if self._trace_limiter is not None and exchange.trace_id is not None:
            self._trace_limiter.admit(caller.team, exchange.trace_id)
            exchange.trace_admitted = True
        budgets = [
            budget
            for budget in access.budgets_of(caller.team, caller.key_id)
            if budget.settings.hard
        ]
        if not budgets or exchange.family not in EXTRACTORS or exchange.upstream is None:
            return
        now = self._clock()
        usage = estimated_usage(
            exchange.family, exchange.path, exchange.model, exchange.request, self._output_allowance
        )
        cost = estimated_cost(self._catalog, exchange.upstream, usage, exchange.model, now)
        exchange.reservation = await self._guard.reserve(
            budgets, max(cost, _LEAST_RESERVATION), now
        )

    def settle(self, exchange: Exchange, record: UsageRecord) -> None:
        if exchange.trace_admitted and self._trace_limiter is not None:
            assert exchange.trace_id is not None
            self._trace_limiter.release(exchange.caller.team, exchange.trace_id)
        if exchange.reservation is not NO_RESERVATION:
            self._guard.settle(exchange.reservation, record.request_id, record.cost_usd)
