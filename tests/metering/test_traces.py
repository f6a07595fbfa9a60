"""Traces group a user request's calls; finished traces are counted once idle."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal

from proxy.callers import DEFAULT_TEAM
from proxy.metering.attribution import Attribution
from proxy.metering.traces import TraceSummary, TraceTracker
from proxy.metering.usage import Price, Usage, UsageRecord


def record(request_id: str, trace_id: str, cost: str | None) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        created_at=datetime.now(UTC),
        team=DEFAULT_TEAM,
        upstream="fake",
        endpoint="chat",
        model="gpt-4o",
        status="200",
        usage=Usage(input_tokens=10, output_tokens=5),
        price=None if cost is None else Price(Decimal(cost), "config:gpt-4o"),
        latency_seconds=0.1,
        trace_id=trace_id,
    )


def test_a_call_without_trace_headers_roots_its_own_trace() -> None:
    tracker = TraceTracker(60, on_finished=lambda summary: None)
    assert tracker.resolve("req-1", Attribution()) == ("req-1", None)


def test_children_of_children_share_the_root_trace() -> None:
    tracker = TraceTracker(60, on_finished=lambda summary: None)
    tracker.resolve("root", Attribution())
    tracker.resolve("child", Attribution(parent_id="root"))
    assert tracker.resolve("grandchild", Attribution(parent_id="child")) == ("root", "child")


def test_an_unknown_parent_roots_the_trace() -> None:
    tracker = TraceTracker(60, on_finished=lambda summary: None)
    assert tracker.resolve("req-2", Attribution(parent_id="elsewhere")) == (
        "elsewhere",
        "elsewhere",
    )


def test_summary_counts_background_calls_tokens_and_cost() -> None:
    tracker = TraceTracker(60, on_finished=lambda summary: None)
    for request_id in ("root", "a", "b"):
        tracker.resolve(request_id, Attribution(parent_id=None if request_id == "root" else "root"))
    tracker.publish(record("root", "root", "0.10"))
    tracker.publish(record("a", "root", "0.05"))
    tracker.publish(record("b", "root", None))
    summary = tracker.open_trace("root")
    assert summary is not None
    assert (summary.calls, summary.background_calls, summary.cost_usd) == (3, 2, Decimal("0.15"))


def test_without_costs_counted_a_trace_of_one_call_still_counts_the_children_that_join_it() -> None:
    tracker = TraceTracker(60, on_finished=lambda summary: None, count_costs=False)
    assert tracker.resolve("root", Attribution()) == ("root", None)
    tracker.publish(record("root", "root", "0.10"))
    lone = tracker.open_trace("root")
    assert lone is not None
    assert (lone.calls, lone.cost_usd) == (1, None)

    assert tracker.resolve("child", Attribution(parent_id="root")) == ("root", "root")
    tracker.publish(record("child", "root", "0.05"))
    summary = tracker.open_trace("root")
    assert summary is not None
    assert (summary.calls, summary.background_calls, summary.cost_usd) == (2, 1, None)


def test_a_call_moves_its_trace_behind_the_ones_idle_longer() -> None:
    finished: list[TraceSummary] = []
    now = [100.0]
    tracker = TraceTracker(10, finished.append, count_costs=False, clock=lambda: now[0])
    for trace_id in ("first", "second", "third"):
        tracker.publish(record(trace_id, trace_id, None))
        now[0] += 1
    tracker.publish(record("late", "first", None))  # at 103

    assert [s.trace_id for s in tracker.finish_idle(now=111.5)] == ["second"]
    assert [s.trace_id for s in tracker.finish_idle(now=112.5)] == ["third"]
    assert [(s.trace_id, s.calls) for s in tracker.finish_idle(now=113)] == [("first", 2)]
    assert [s.calls for s in finished] == [1, 1, 2]


def test_open_traces_of_one_call_take_little_memory() -> None:
    tracker = TraceTracker(60, on_finished=lambda summary: None, count_costs=False)
    calls = [record(f"{number:032x}", f"{number:032x}", "0.001") for number in range(20_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for call in calls:
            tracker.resolve(call.request_id, Attribution())
            tracker.publish(call)
        grown = sum(
            stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename")
        )
    finally:
        tracemalloc.stop()
    # A dict slot and a float each (the ids belong to the calls here); a summary and a
    # remembered call each, as before, were over 300 bytes.
    assert grown / len(calls) < 100


def test_idle_traces_finish_once() -> None:
    finished: list[TraceSummary] = []
    tracker = TraceTracker(10, on_finished=finished.append)
    tracker.resolve("root", Attribution())
    tracker.publish(record("root", "root", "0.10"))
    summary = tracker.open_trace("root")
    assert summary is not None
    assert tracker.finish_idle(now=summary.last_call_at + 5) == []
    assert [s.trace_id for s in tracker.finish_idle(now=summary.last_call_at + 10)] == ["root"]
    assert tracker.finish_idle(now=float("inf")) == []
    assert [s.calls for s in finished] == [1]
