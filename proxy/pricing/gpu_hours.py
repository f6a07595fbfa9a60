"""Self-hosted GPU-hour costs: each UTC hour of an upstream's `hourly_cost_usd`, split by calls.

Method. Calls are recorded as they settle, under (upstream, UTC hour of the call). Closing an hour
gives every call of that hour the share `hourly_cost * call_tokens / hour_tokens` (when no call of
the hour reported tokens, the calls share it equally). Shares are whole multiples of
`QUANTUM` (1e-10 USD): each call first gets its share rounded down, then the units left over
go one each to the calls with the largest remainders (ties: smallest request id), so the shares
add up to exactly the hourly cost (rounded to `QUANTUM` first) whatever the order of recording.
An hour with no calls is reported as idle: its whole cost belongs to no call.

A partly used hour is charged in full to its calls: the GPU is paid for by the hour, and whoever
used it that hour bears all of it, so one call alone in a quiet hour carries the whole hour. The
alternative is to charge calls only for the capacity they used (for example tokens over the
endpoint's tokens-per-hour capacity, or their busy seconds over 3,600) and report the rest of the
hour as idle; that keeps per-call costs stable but needs a capacity figure per upstream and leaves
part of the bill to be attributed separately.

Hours are closed in order, once no more calls can settle into them; a call recorded for an hour
already closed is refused. This is a pure in-memory tally: persisting it is the ledger's job.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

QUANTUM = Decimal("1e-10")


@dataclass(frozen=True, slots=True)
class GpuCall:
    """One settled call on a self-hosted upstream."""

    request_id: str
    team: str
    model: str
    tokens: int


@dataclass(frozen=True, slots=True)
class CallCost:
    call: GpuCall
    cost_usd: Decimal


@dataclass(frozen=True, slots=True)
class ClosedHour:
    """One upstream's hour: its calls' shares, and the idle cost no call carries."""

    upstream: str
    hour: datetime
    hourly_cost_usd: Decimal
    calls: tuple[CallCost, ...]
    idle_cost_usd: Decimal


class GpuHourAllocator:
    """Tallies calls per upstream and UTC hour, and splits each closed hour's cost over them."""

    def __init__(self, hourly_costs: Mapping[str, Decimal]) -> None:
        if any(cost < 0 for cost in hourly_costs.values()):
            raise ValueError("hourly costs cannot be negative")
        self._hourly_costs = dict(hourly_costs)
        self._open: defaultdict[tuple[str, datetime], list[GpuCall]] = defaultdict(list)
        self._closed_through: dict[str, datetime] = {}

    def record(
        self, upstream: str, at: datetime, *, request_id: str, team: str, model: str, tokens: int
    ) -> None:
        """Count a settled call of `upstream` made at `at` (naive times are UTC)."""
        self._hourly_cost(upstream)
        if tokens < 0:
            raise ValueError("tokens cannot be negative")
        hour = hour_start(at)
        self._check_open(upstream, hour)
        self._open[upstream, hour].append(GpuCall(request_id, team, model, tokens))

    def close_hour(self, upstream: str, hour: datetime) -> ClosedHour:
        """Split the cost of the UTC hour holding `hour` over its calls; refuse its late calls."""
        hourly_cost = self._hourly_cost(upstream)
        start = hour_start(hour)
        self._check_open(upstream, start)
        calls = self._open.pop((upstream, start), [])
        self._closed_through[upstream] = start
        allocated = allocate(hourly_cost, calls)
        idle = Decimal(0) if calls else hourly_cost.quantize(QUANTUM, ROUND_HALF_EVEN)
        return ClosedHour(upstream, start, hourly_cost, allocated, idle)

    def _hourly_cost(self, upstream: str) -> Decimal:
        if upstream not in self._hourly_costs:
            raise ValueError(f"upstream {upstream!r} has no hourly cost")
        return self._hourly_costs[upstream]

    def _check_open(self, upstream: str, hour: datetime) -> None:
        closed_through = self._closed_through.get(upstream)
        if closed_through is not None and hour <= closed_through:
            raise ValueError(f"hour {hour.isoformat()} of upstream {upstream!r} is closed")


def hour_start(at: datetime) -> datetime:
    """The start of the UTC hour containing `at` (naive times are UTC)."""
    utc = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return utc.replace(minute=0, second=0, microsecond=0)


def allocate(cost: Decimal, calls: Sequence[GpuCall]) -> tuple[CallCost, ...]:
    """Split `cost` over `calls` by tokens, in whole `QUANTUM`s that sum exactly to it."""
    if not calls:
        return ()
    units = int(cost.quantize(QUANTUM, ROUND_HALF_EVEN) / QUANTUM)
    weights = [call.tokens for call in calls]
    if not any(weights):
        weights = [1] * len(calls)
    total = sum(weights)
    shares = [units * weight // total for weight in weights]
    remainders = [units * weight % total for weight in weights]
    # Integer arithmetic keeps the split exact; the leftover units are fewer than the calls.
    by_remainder = sorted(range(len(calls)), key=lambda i: (-remainders[i], calls[i].request_id))
    for i in by_remainder[: units - sum(shares)]:
        shares[i] += 1
    return tuple(
        CallCost(call, Decimal(share) * QUANTUM) for call, share in zip(calls, shares, strict=True)
    )
