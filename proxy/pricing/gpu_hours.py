"""Self-hosted GPU-hour costs: each UTC hour of an upstream's `hourly_cost_usd`, split by calls.

Method. Once a UTC hour has ended, every call of that hour gets the share
`hourly_cost * call_tokens / hour_tokens` (when no call of the hour reported tokens, the calls
share it equally). Shares are whole multiples of
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

The ledger applies this to the calls of every replica (`proxy/ledger/gpu_hours.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from proxy.clock import as_utc

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


def hour_start(at: datetime) -> datetime:
    """The start of the UTC hour containing `at` (naive times are UTC)."""
    return as_utc(at).replace(minute=0, second=0, microsecond=0)


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
