"""Agent traces: the calls one user request caused, grouped under the call at its root.

A call names its trace by `X-Metering-Trace-Id` or `traceparent`, or names its parent call by
`X-Metering-Parent-Id` and so joins the parent's trace; a call naming neither starts its own.
A trace is finished once no call joined it for `idle_seconds`.

Clients choose these ids, so each team has its own traces: a trace is its team and its id, and
a parent is looked up among the calls of the caller's team only. Another team's call named as
parent is treated as any parent this process never saw: its id names a trace of the caller's
team. So the answer is the same whether the id is another team's, another replica's or unknown,
and tells nothing of other teams' calls.

Most calls are a trace of their own, and each stays open for `idle_seconds` in case a child
names it: at a few thousand calls a second that is hundreds of thousands of open traces. So a
call that roots its own trace is not remembered as a call (its id is its trace's id), and a
trace of one call is held as the time of that call, unless per-trace cost limits need its cost.
Open traces are kept per team (a dict of each team's: no key object per trace) in the order of
their last call, so finishing idle ones never walks the rest.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from proxy.metering.attribution import Attribution
from proxy.metering.usage import UsageRecord


@dataclass(slots=True)
class TraceSummary:
    team: str
    trace_id: str
    calls: int
    cost_usd: Decimal | None  # None unless the tracker counts costs
    last_call_at: float

    @property
    def background_calls(self) -> int:
        """Every call after the root: what agent libraries do on the user's behalf."""
        return max(self.calls - 1, 0)


class TraceTracker:
    """Resolves each call's trace and keeps a running summary per open trace (a sink)."""

    name = "traces"

    def __init__(
        self,
        idle_seconds: float,
        on_finished: Callable[[TraceSummary], None],
        count_costs: bool = True,
        max_remembered_calls: int = 200_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._idle_seconds = idle_seconds
        self._on_finished = on_finished
        self._count_costs = count_costs
        self._max_remembered_calls = max_remembered_calls
        # The trace of each call whose trace is not its own id (children, named traces), by
        # the call's team and id.
        self._trace_of_call: OrderedDict[tuple[str, str], str] = OrderedDict()
        # Each team's open traces, oldest last call first; a float is a trace of one call made
        # at that time.
        self._open: dict[str, dict[str, TraceSummary | float]] = {}

    def resolve(
        self, team: str, request_id: str, attribution: Attribution
    ) -> tuple[str, str | None]:
        """The (trace id, parent id) of a call of `team` that is starting."""
        parent_id = attribution.parent_id
        if attribution.trace_id is not None:
            trace_id = attribution.trace_id
        elif parent_id is not None:
            # A parent not remembered rooted its own trace, or is one this process never saw
            # (another replica's, forgotten, or another team's), which then roots it.
            trace_id = self._trace_of_call.get((team, parent_id), parent_id)
        else:
            return request_id, None
        self._trace_of_call[team, request_id] = trace_id
        if len(self._trace_of_call) > self._max_remembered_calls:
            self._trace_of_call.popitem(last=False)
        return trace_id, parent_id

    def publish(self, record: UsageRecord) -> None:
        """Count a settled call into its trace."""
        trace_id = record.trace_id
        if trace_id is None:
            return
        now = self._clock()
        team = record.team
        open_traces = self._open.get(team)
        if open_traces is None:
            open_traces = self._open[team] = {}
        earlier = open_traces.pop(trace_id, None)  # re-added below, as the newest
        if isinstance(earlier, TraceSummary):
            summary = earlier
        elif earlier is None and not self._count_costs:
            open_traces[trace_id] = now
            return
        else:
            cost = Decimal(0) if self._count_costs else None
            summary = TraceSummary(team, trace_id, 0 if earlier is None else 1, cost, now)
        summary.calls += 1
        if summary.cost_usd is not None and record.cost_usd is not None:
            summary.cost_usd += record.cost_usd
        summary.last_call_at = now
        open_traces[trace_id] = summary

    def open_trace(self, team: str, trace_id: str) -> TraceSummary | None:
        """The team's trace, while it is open."""
        entry = self._open.get(team, {}).get(trace_id)
        return entry if entry is None else _summary(team, trace_id, entry)

    def finish_idle(self, now: float | None = None) -> list[TraceSummary]:
        """Finish every trace idle for `idle_seconds` (all of them with `now=inf`)."""
        now = self._clock() if now is None else now
        finished: list[TraceSummary] = []
        for team, open_traces in list(self._open.items()):
            idle: list[TraceSummary] = []
            for trace_id, entry in open_traces.items():
                summary = _summary(team, trace_id, entry)
                if now - summary.last_call_at < self._idle_seconds:
                    break  # the rest had a call since
                idle.append(summary)
            for summary in idle:
                del open_traces[summary.trace_id]
            if not open_traces:
                del self._open[team]
            finished += idle
        for summary in finished:
            self._on_finished(summary)
        return finished


def _summary(team: str, trace_id: str, entry: TraceSummary | float) -> TraceSummary:
    if isinstance(entry, TraceSummary):
        return entry
    return TraceSummary(team, trace_id, calls=1, cost_usd=None, last_call_at=entry)
