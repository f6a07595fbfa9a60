"""Per-trace limits: a runaway agent loop is stopped once its trace has made too many calls or
spent too much, before the next call is forwarded. A trace is a team's (see
proxy/metering/traces.py): another team sending the same trace id never counts into it.

Counts are this process's (settled calls from the trace tracker, plus calls in flight); with
several replicas each holds the limit for the calls it serves, so a trace spread over N
replicas is stopped at N times the limit at most.
"""

from __future__ import annotations

from decimal import Decimal

from proxy.errors import Refused
from proxy.metering.traces import TraceTracker


class TraceBudgetExceeded(Refused):
    status = 429
    error_type = "insufficient_quota"
    code = "trace_budget_exceeded"


class TraceLimiter:
    def __init__(
        self, traces: TraceTracker, max_calls: int | None, max_cost_usd: Decimal | None
    ) -> None:
        self._traces = traces
        self._max_calls = max_calls
        self._max_cost_usd = max_cost_usd
        # Calls admitted and not yet settled, by team and trace id.
        self._in_flight: dict[tuple[str, str], int] = {}

    def admit(self, team: str, trace_id: str) -> None:
        """Count a call into the team's trace, or refuse it when the trace is over a limit."""
        summary = self._traces.open_trace(team, trace_id)
        in_flight = self._in_flight.get((team, trace_id), 0)
        calls = in_flight + (summary.calls if summary else 0)
        if self._max_calls is not None and calls >= self._max_calls:
            raise TraceBudgetExceeded(
                f"Trace {trace_id} has made {calls} calls, its limit of {self._max_calls}."
            )
        if (
            self._max_cost_usd is not None
            and summary is not None
            and summary.cost_usd is not None
            and summary.cost_usd >= self._max_cost_usd
        ):
            raise TraceBudgetExceeded(
                f"Trace {trace_id} has cost ${summary.cost_usd}, its limit of "
                f"${self._max_cost_usd}."
            )
        self._in_flight[team, trace_id] = in_flight + 1

    def release(self, team: str, trace_id: str) -> None:
        left = self._in_flight.get((team, trace_id), 0) - 1
        if left > 0:
            self._in_flight[team, trace_id] = left
        else:
            self._in_flight.pop((team, trace_id), None)
