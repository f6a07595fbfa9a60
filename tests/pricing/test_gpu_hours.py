"""Splitting a self-hosted upstream's hourly GPU cost over the calls of each UTC hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from proxy.pricing.gpu_hours import GpuCall, GpuHourAllocator, allocate

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


def test_hour_without_calls_is_idle_at_its_whole_cost() -> None:
    allocator = GpuHourAllocator({"gpu": Decimal("2.50")})

    hour = allocator.close_hour("gpu", TEN_AM)

    assert hour.calls == ()
    assert hour.idle_cost_usd == Decimal("2.50")


def test_partly_used_hour_is_charged_in_full_to_its_calls() -> None:
    allocator = GpuHourAllocator({"gpu": Decimal("2.50")})
    allocator.record("gpu", TEN_AM, request_id="r1", team="a", model="llama", tokens=10)

    hour = allocator.close_hour("gpu", TEN_AM)

    assert [share.cost_usd for share in hour.calls] == [Decimal("2.50")]
    assert hour.idle_cost_usd == 0


def test_calls_are_tallied_per_upstream_and_utc_hour() -> None:
    allocator = GpuHourAllocator({"a": Decimal(1), "b": Decimal(1)})
    # 11:30 at UTC+02:00 is 09:30 UTC: the hour before ten.
    allocator.record(
        "a",
        datetime(2026, 11, 1, 11, 30, tzinfo=timezone(timedelta(hours=2))),
        request_id="early",
        team="t",
        model="m",
        tokens=1,
    )
    allocator.record(
        "a", TEN_AM + timedelta(minutes=59), request_id="r1", team="t", model="m", tokens=1
    )
    allocator.record("b", TEN_AM, request_id="r2", team="t", model="m", tokens=1)

    nine = allocator.close_hour("a", TEN_AM - timedelta(hours=1))
    ten = allocator.close_hour("a", TEN_AM)

    assert [share.call.request_id for share in nine.calls] == ["early"]
    assert [share.call.request_id for share in ten.calls] == ["r1"]
    assert ten.hour == TEN_AM


def test_call_for_a_closed_hour_is_refused() -> None:
    allocator = GpuHourAllocator({"gpu": Decimal(1)})
    allocator.close_hour("gpu", TEN_AM)

    with pytest.raises(ValueError, match="closed"):
        allocator.record("gpu", TEN_AM, request_id="late", team="t", model="m", tokens=1)


def test_call_on_an_upstream_without_hourly_cost_is_refused() -> None:
    allocator = GpuHourAllocator({"gpu": Decimal(1)})

    with pytest.raises(ValueError, match="no hourly cost"):
        allocator.record("vendor", TEN_AM, request_id="r", team="t", model="m", tokens=1)
