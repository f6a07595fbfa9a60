"""Traces group a user request's calls; finished traces are counted once idle."""

from __future__ import annotations

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
    assert (summary.calls, summary.background_calls, summary.unpriced_calls) == (3, 2, 1)
    assert (summary.input_tokens, summary.cost_usd) == (30, Decimal("0.15"))


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
