"""Hard budgets, enforced without a query per call and without races between replicas.

Each process leases slices of a hard budget from the database (`BudgetStore.grant`, atomic) and
admits calls against its lease in memory: a call reserves its estimated cost before it is
forwarded, and is refused with a 429 when the lease cannot cover it and the database grants no
more. When the call ends, the reservation turns into the call's real cost; once the ledger has
stored the call (and with it the spend), that cost leaves the lease. Until then it is counted
twice, as spend and as lease, which errs on the safe side.

Why leases rather than one reservation row per call: a call then costs no database round trip,
unless its process has used up its slice. Near the limit the slices shrink to single calls, so
the limit holds exactly; far from it they are a share of the limit. A slice left idle goes back
after `idle_seconds`; a process that dies loses its slices only until their short expiry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from proxy.budgets.model import Budget
from proxy.budgets.periods import Period
from proxy.budgets.store import BudgetStore
from proxy.clock import iso_z
from proxy.errors import ProxyError, Refused
from proxy.ledger.database import DATABASE_ERRORS

logger = logging.getLogger(__name__)

_ZERO = Decimal(0)
_NEVER = datetime.min.replace(tzinfo=UTC)


class BudgetExceeded(Refused):
    status = 429
    error_type = "insufficient_quota"
    code = "budget_exceeded"

    def __init__(self, budget: Budget, period: Period) -> None:
        settings = budget.settings
        super().__init__(
            f"The {settings.period} budget of {budget.label} (${settings.limit_usd}) does not "
            f"cover this call. It resets at {iso_z(period.end)}."
        )
        self.resets_at = period.end

    def headers(self) -> list[tuple[bytes, bytes]]:
        resets_at = iso_z(self.resets_at).encode()
        return [*super().headers(), (b"x-metering-budget-resets-at", resets_at)]


class BudgetUnavailable(ProxyError):
    status = 503
    code = "budget_unavailable"


@dataclass(slots=True)
class _Lease:
    budget: Budget
    period: Period
    held: Decimal = _ZERO  # granted by the database and not yet given back
    in_flight: Decimal = _ZERO  # reserved by calls under way
    unlanded: Decimal = _ZERO  # cost of ended calls the ledger has not stored yet
    valid_until: datetime | None = None
    # What the database holds for this process, as last written, and when.
    written: Decimal = _ZERO
    written_at: datetime = _NEVER
    last_used: float = field(default_factory=time.monotonic)
    granting: asyncio.Lock = field(default_factory=asyncio.Lock)

    def available(self, now: datetime) -> Decimal:
        if self.valid_until is None or self.valid_until <= now:
            return _ZERO  # an expired lease may have been granted to someone else
        return self.held - self.in_flight - self.unlanded

    def wrote(self, held: Decimal, now: datetime) -> None:
        self.written, self.written_at = held, now

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or self.unlanded > 0


@dataclass(frozen=True, slots=True)
class Reservation:
    leases: tuple[tuple[_Lease, Decimal], ...]


NO_RESERVATION = Reservation(())


@dataclass(frozen=True, slots=True)
class LeasePolicy:
    ttl_seconds: float = 15.0
    # How often leases shrunk by stored calls are written back for other replicas to use.
    renew_seconds: float = 0.25
    # A slice is this share of the limit (or the call's own estimate, if that is more).
    slice_share: Decimal = Decimal("0.02")
    idle_seconds: float = 2.0


class BudgetGuard:
    def __init__(self, store: BudgetStore, holder: str, policy: LeasePolicy) -> None:
        self._store = store
        self._holder = holder
        self._policy = policy
        self._leases: dict[tuple[int, datetime], _Lease] = {}
        self._unlanded: dict[str, tuple[tuple[_Lease, Decimal], ...]] = {}

    async def reserve(self, budgets: Iterable[Budget], cost: Decimal, now: datetime) -> Reservation:
        """Reserve `cost` on every hard budget given, or on none (raising BudgetExceeded)."""
        taken: list[tuple[_Lease, Decimal]] = []
        try:
            for budget in budgets:
                if not budget.settings.hard:
                    continue
                lease = self._lease(budget, now)
                if lease.available(now) < cost:
                    await self._grow(lease, cost, now)
                if lease.available(now) < cost:
                    raise BudgetExceeded(budget, lease.period)
                lease.in_flight += cost
                lease.last_used = time.monotonic()
                taken.append((lease, cost))
        except BaseException:
            self._give_back(taken)
            raise
        return Reservation(tuple(taken))

    def settle(self, reservation: Reservation, request_id: str, cost: Decimal | None) -> None:
        """The call ended, costing `cost`: it stays on the lease until the ledger stores it."""
        if not reservation.leases:
            return
        self._give_back(reservation.leases)
        charged = cost or _ZERO
        for lease, _ in reservation.leases:
            lease.unlanded += charged
        self._unlanded[request_id] = tuple((lease, charged) for lease, _ in reservation.leases)

    def landed(self, request_ids: Iterable[str]) -> None:
        """The ledger stored these calls (their spend is in the database now)."""
        for request_id in request_ids:
            charges = self._unlanded.pop(request_id, None)
            for lease, cost in charges or ():
                lease.unlanded -= cost
                lease.held = max(lease.held - cost, _ZERO)

    async def renew(self, now: datetime) -> None:
        """Write shrunk leases to the database (others may use what they free), keep live ones
        alive, give idle ones back, forget those of past periods. Run every `renew_seconds`."""
        idle_since = time.monotonic() - self._policy.idle_seconds
        heartbeat_due = now - timedelta(seconds=self._policy.ttl_seconds / 3)
        for key, lease in list(self._leases.items()):
            if lease.last_used < idle_since or not lease.period.contains(now):
                lease.held = min(lease.held, lease.in_flight + lease.unlanded)
            if lease.held == lease.written and lease.written_at > heartbeat_due:
                continue
            # A grant under way would be undone by a renewal that read `held` before it: the
            # row would shrink (or vanish) under a lease this process goes on using.
            async with lease.granting:
                held = lease.held
                try:
                    await self._store.renew(
                        lease.budget.id, lease.period.start, self._holder, held, self._expiry(now)
                    )
                except DATABASE_ERRORS as error:
                    logger.warning(
                        "cannot renew the budget lease of %s: %s", lease.budget.label, error
                    )
                    continue
                lease.wrote(held, now)
                lease.valid_until = self._valid_until(now) if held > 0 else None
                if lease.held == 0 and not lease.busy:
                    del self._leases[key]

    async def release_all(self, now: datetime) -> None:
        """At shutdown: give every slice back (what the ledger has not stored stays leased
        until it expires)."""
        for lease in self._leases.values():
            lease.held = lease.unlanded
            lease.in_flight = _ZERO
            lease.last_used = 0.0
        await self.renew(now)

    def _lease(self, budget: Budget, now: datetime) -> _Lease:
        period = budget.period_at(now)
        key = (budget.id, period.start)
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease(budget, period)
        lease.budget = budget  # its limit may have changed since
        return lease

    async def _grow(self, lease: _Lease, cost: Decimal, now: datetime) -> None:
        async with lease.granting:
            short = cost - lease.available(now)
            if short <= 0:
                return  # another call grew it while this one waited
            if lease.valid_until is None or lease.valid_until <= now:
                lease.held = lease.unlanded + lease.in_flight  # what expired is not ours
            wanted = max(short, lease.budget.settings.limit_usd * self._policy.slice_share)
            try:
                granted = await self._store.grant(
                    lease.budget,
                    lease.period,
                    self._holder,
                    held=lease.held,
                    wanted=wanted,
                    needed=short,
                    expires_at=self._expiry(now),
                    now=now,
                )
            except DATABASE_ERRORS as error:
                logger.warning("cannot lease budget for %s: %s", lease.budget.label, error)
                raise BudgetUnavailable(
                    f"The budget of {lease.budget.label} cannot be checked right now (its "
                    "database is unavailable); the call was not forwarded."
                ) from None
            if granted > 0:
                lease.held += granted
                lease.wrote(lease.held, now)
                lease.valid_until = self._valid_until(now)

    def _expiry(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self._policy.ttl_seconds)

    def _valid_until(self, now: datetime) -> datetime:
        # This process stops using a lease a third of its life before the database lets others
        # take it, a margin for clock drift between replicas; renewals come every third.
        return now + timedelta(seconds=self._policy.ttl_seconds * 2 / 3)

    @staticmethod
    def _give_back(taken: Iterable[tuple[_Lease, Decimal]]) -> None:
        for lease, cost in taken:
            lease.in_flight -= cost
