"""Agent traces: the calls one user request caused, grouped under the call at its root.

A call names its trace by `X-Metering-Trace-Id` or `traceparent`, or names its parent call by
`X-Metering-Parent-Id` and so joins the parent's trace; a call naming neither starts its own.
A trace is finished once no call joined it for `idle_seconds`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from proxy.metering.attribution import Attribution
from proxy.metering.usage import UsageRecord


@dataclass(slots=True)
class TraceSummary:
    trace_id: str
    root_id: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced_calls: int = 0
    last_call_at: float = field(default_factory=time.monotonic)

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
        max_remembered_calls: int = 200_000,
    ) -> None:
        self._idle_seconds = idle_seconds
        self._on_finished = on_finished
        self._max_remembered_calls = max_remembered_calls
        self._trace_of_call: OrderedDict[str, str] = OrderedDict()
        self._open: dict[str, TraceSummary] = {}

    def resolve(self, request_id: str, attribution: Attribution) -> tuple[str, str | None]:
        """The (trace id, parent id) of a call that is starting."""
        parent_id = attribution.parent_id
        if attribution.trace_id is not None:
            trace_id = attribution.trace_id
        elif parent_id is not None:
            # A parent this process never saw (another replica, or forgotten) roots the trace.
            trace_id = self._trace_of_call.get(parent_id, parent_id)
        else:
            trace_id = request_id
        self._trace_of_call[request_id] = trace_id
        if len(self._trace_of_call) > self._max_remembered_calls:
            self._trace_of_call.popitem(last=False)
        return trace_id, parent_id

    def publish(self, record: UsageRecord) -> None:
        """Count a settled call into its trace."""
        if record.trace_id is None:
            return
        summary = self._open.get(record.trace_id)
        if summary is None:
            root = record.trace_id if record.trace_id in self._trace_of_call else record.request_id
            summary = self._open[record.trace_id] = TraceSummary(record.trace_id, root)
        summary.calls += 1
        summary.input_tokens += record.usage.input_tokens
        summary.output_tokens += record.usage.output_tokens
        if record.cost_usd is None:
            summary.unpriced_calls += 1
        else:
            summary.cost_usd += record.cost_usd
        summary.last_call_at = time.monotonic()

    def open_trace(self, trace_id: str) -> TraceSummary | None:
        return self._open.get(trace_id)

    def finish_idle(self, now: float | None = None) -> list[TraceSummary]:
        """Finish every trace idle for `idle_seconds` (all of them with `now=inf`)."""
        now = time.monotonic() if now is None else now
        finished = [s for s in self._open.values() if now - s.last_call_at >= self._idle_seconds]
        for summary in finished:
            del self._open[summary.trace_id]
            self._on_finished(summary)
        return finished
