"""Per-trace limits count a team's trace only: the same trace id of another team is another."""

from __future__ import annotations

import pytest

from proxy.budgets.trace_limits import TraceBudgetExceeded, TraceLimiter
from proxy.metering.traces import TraceTracker
from tests.metering.test_traces import record


def test_another_teams_calls_under_the_same_trace_id_do_not_count_into_a_teams_limit() -> None:
    traces = TraceTracker(60, on_finished=lambda summary: None)
    limiter = TraceLimiter(traces, max_calls=2, max_cost_usd=None)
    for number in range(2):
        limiter.admit("beta", "run-1")
        traces.publish(record(f"b{number}", "run-1", None, team="beta"))
        limiter.release("beta", "run-1")

    limiter.admit("alpha", "run-1")
    with pytest.raises(TraceBudgetExceeded):
        limiter.admit("beta", "run-1")


def test_calls_in_flight_count_into_their_teams_trace_only() -> None:
    limiter = TraceLimiter(TraceTracker(60, lambda summary: None), max_calls=1, max_cost_usd=None)
    limiter.admit("beta", "run-1")

    limiter.admit("alpha", "run-1")
    limiter.release("beta", "run-1")
    limiter.admit("beta", "run-1")
