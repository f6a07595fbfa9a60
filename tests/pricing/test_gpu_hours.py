"""Splitting a self-hosted upstream's hourly GPU cost over the calls of each UTC hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from proxy.pricing.gpu_hours import GpuCall, allocate, hour_start

TEN_AM = datetime(2026, 11, 1, 10, tzinfo=UTC)


def _calls(*tokens: int) -> list[GpuCall]:
    return [GpuCall(f"req-{i}", "team", "llama", n) for i, n in enumerate(tokens)]


def test_shares_are_proportional_to_tokens() -> None:
    shares = allocate(Decimal("3.00"), _calls(100, 200))

    assert [share.cost_usd for share in shares] == [Decimal(1), Decimal(2)]


def test_shares_sum_exactly_to_the_hourly_cost() -> None:
    shares = allocate(Decimal("2.48"), _calls(7, 13, 1, 999_983, 5))

    assert sum(share.cost_usd for share in shares) == Decimal("2.48")


def test_leftover_quanta_go_to_the_largest_remainders_then_smallest_request_id() -> None:
    shares = allocate(Decimal(1), _calls(1, 1, 1))

    assert [share.cost_usd for share in shares] == [
        Decimal("0.3333333334"),
        Decimal("0.3333333333"),
        Decimal("0.3333333333"),
    ]


def test_split_does_not_depend_on_the_order_of_recording() -> None:
    calls = _calls(3, 5, 7, 11)

    forward = {share.call.request_id: share.cost_usd for share in allocate(Decimal(1), calls)}
    backward = {
        share.call.request_id: share.cost_usd for share in allocate(Decimal(1), calls[::-1])
    }

    assert forward == backward


def test_calls_without_tokens_share_the_hour_equally() -> None:
    shares = allocate(Decimal(2), _calls(0, 0))

    assert [share.cost_usd for share in shares] == [Decimal(1), Decimal(1)]


def test_hour_start_is_the_utc_hour_and_naive_times_are_utc() -> None:
    assert hour_start(datetime(2026, 11, 1, 10, 59, 59)) == TEN_AM
    eleven_in_paris = datetime(2026, 11, 1, 11, 30, tzinfo=timezone(timedelta(hours=1)))
    assert hour_start(eleven_in_paris) == TEN_AM
