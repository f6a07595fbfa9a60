"""Traces group a user request's calls; finished traces are counted once idle."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal

from proxy.callers import DEFAULT_TEAM
from proxy.metering.attribution import Attribution
from proxy.metering.traces import TraceSummary, TraceTracker
from proxy.metering.usage import Price, Usage, UsageRecord


def record(
    request_id: str, trace_id: str, cost: str | None, team: str = DEFAULT_TEAM
) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        created_at=datetime.now(UTC),
        team=team,
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
    assert tracker.resolve(DEFAULT_TEAM, "req-1", Attribution()) == ("req-1", None)


def test_children_of_children_share_the_root_trace() -> None:
    tracker = TraceTracker(60, on_finished=lambda summary: None)
    tracker.resolve(DEFAULT_TEAM, "root", Attribution())
    tracker.resolve(DEFAULT_TEAM, "child", Attribution(parent_id="root"))
    assert tracker.resolve(DEFAULT_TEAM, "grandchild", Attribution(parent_id="child")) == (
        "root",
        "child",
    )


def test_an_unknown_parent_roots_the_trace() -> None:
    tracker = TraceTracker(60, on_finished=lambda summary: None)
    assert tracker.resolve(DEFAULT_TEAM, "req-2", Attribution(parent_id="elsewhere")) == (
        "elsewhere",
        "elsewhere",
    )


def test_summary_counts_background_calls_tokens_and_cost() -> None:
    tracker = TraceTracker(60, on_finished=lambda summary: None)
    for request_id in ("root", "a", "b"):
        tracker.resolve(
            DEFAULT_TEAM,
            request_id,
            Attribution(parent_id=None if request_id == "root" else "root"),
        )
    tracker.publish(record("root", "root", "0.10"))
    tracker.publish(record("a", "root", "0.05"))
    tracker.publish(record("b", "root", None))
    summary = tracker.open_trace(DEFAULT_TEAM, "root")
    assert summary is not None
    assert (summary.calls, summary.background_calls, summary.cost_usd) == (3, 2, Decimal("0.15"))


def test_without_costs_counted_a_trace_of_one_call_still_counts_the_children_that_join_it() -> None:
    tracker = TraceTracker(60, on_finished=lambda summary: None, count_costs=False)
    assert tracker.resolve(DEFAULT_TEAM, "root", Attribution()) == ("root", None)
    tracker.publish(record("root", "root", "0.10"))
    lone = tracker.open_trace(DEFAULT_TEAM, "root")
    assert lone is not None
    assert (lone.calls, lone.cost_usd) == (1, None)

    assert tracker.resolve(DEFAULT_TEAM, "child", Attribution(parent_id="root")) == ("root", "root")
    tracker.publish(record("child", "root", "0.05"))
    summary = tracker.open_trace(DEFAULT_TEAM, "root")
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
            tracker.resolve(DEFAULT_TEAM, call.request_id, Attribution())
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
    tracker.resolve(DEFAULT_TEAM, "root", Attribution())
    tracker.publish(record("root", "root", "0.10"))
    summary = tracker.open_trace(DEFAULT_TEAM, "root")
    assert summary is not None
    assert tracker.finish_idle(now=summary.last_call_at + 5) == []
    assert [s.trace_id for s in tracker.finish_idle(now=summary.last_call_at + 10)] == ["root"]
    assert tracker.finish_idle(now=float("inf")) == []
    assert [s.calls for s in finished] == [1]


def test_a_trace_id_sent_by_two_teams_is_a_trace_of_each() -> None:
    tracker = TraceTracker(60, on_finished=lambda summary: None)
    tracker.publish(record("a1", "shared", "0.10", team="alpha"))
    tracker.publish(record("a2", "shared", "0.10", team="alpha"))
    tracker.publish(record("b1", "shared", "0.01", team="beta"))

    alpha, beta = tracker.open_trace("alpha", "shared"), tracker.open_trace("beta", "shared")

    assert alpha is not None and beta is not None
    assert (alpha.team, alpha.calls, alpha.cost_usd) == ("alpha", 2, Decimal("0.20"))
    assert (beta.team, beta.calls, beta.cost_usd) == ("beta", 1, Decimal("0.01"))


def test_a_parent_of_another_team_names_a_trace_of_the_callers_team() -> None:
    tracker = TraceTracker(60, on_finished=lambda summary: None)
    tracker.resolve("alpha", "root", Attribution(trace_id="alpha-run"))
    # As for a parent this process never saw: the id, kept as sent, names the trace.
    assert tracker.resolve("beta", "b1", Attribution(parent_id="root")) == ("root", "root")
    assert tracker.resolve("alpha", "a1", Attribution(parent_id="root")) == ("alpha-run", "root")


def test_idle_traces_of_every_team_finish() -> None:
    tracker = TraceTracker(10, on_finished=lambda summary: None, clock=lambda: 100.0)
    for team in ("alpha", "beta"):
        tracker.publish(record(f"{team}-1", "shared", "0.10", team=team))

    finished = tracker.finish_idle(now=110)

    assert sorted((s.team, s.trace_id) for s in finished) == [
        ("alpha", "shared"),
        ("beta", "shared"),
    ]
    assert tracker.open_trace("alpha", "shared") is None
