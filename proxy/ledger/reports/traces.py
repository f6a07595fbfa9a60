"""Agent traces: one trace's calls as a tree, and the most expensive traces of a window.

Clients choose trace ids, so a trace is a team's: an id two teams sent is two traces, each
listed with its team, and a tree is one team's calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from proxy.ledger.models import TraceRow, UsageRow
from proxy.ledger.reports.documents import TopTraces, TraceCall, TraceTotals, TraceTree
from proxy.ledger.reports.filters import ReportError, Window
from proxy.ledger.reports.sql import utc

MAX_TOP_TRACES = 100


class TraceOfSeveralTeams(ReportError):
    code = "trace_team_required"


async def trace_tree(
    engine: AsyncEngine, trace_id: str, team: str | None = None
) -> TraceTree | None:
    """The team's trace, its calls each under the call that caused it; `None` for a trace
    without such calls. Without `team`, the one team's trace of that id, or
    `TraceOfSeveralTeams` when several teams have one."""
    statement = (
        select(UsageRow)
        .where(UsageRow.trace_id == trace_id)
        .order_by(UsageRow.created_at, UsageRow.request_id)
    )
    if team is not None:
        statement = statement.where(UsageRow.team == team)
    async with AsyncSession(engine) as session:
        rows = (await session.scalars(statement)).all()
    if not rows:
        return None
    teams = sorted({row.team for row in rows})
    if len(teams) > 1:
        raise TraceOfSeveralTeams(
            f"Teams {', '.join(f'`{name}`' for name in teams)} each have a trace `{trace_id}`: "
            "pass `team` to read one.",
            param="team",
        )
    calls = {row.request_id: _call(row) for row in rows}
    parents = _acyclic_parents(rows)
    roots = []
    for row in rows:
        parent = parents[row.request_id]
        if parent is None:
            roots.append(calls[row.request_id])
        else:
            calls[parent].children.append(calls[row.request_id])
    priced = [row.cost_usd for row in rows if row.cost_usd is not None]
    return TraceTree(
        trace_id=trace_id,
        team=rows[0].team,
        started_at=utc(rows[0].created_at),
        last_call_at=max(utc(row.created_at) for row in rows),
        calls=len(rows),
        background_calls=len(rows) - 1,
        unpriced_calls=len(rows) - len(priced),
        input_tokens=sum(row.input_tokens for row in rows),
        output_tokens=sum(row.output_tokens for row in rows),
        cost_usd=sum(priced, Decimal(0)),
        roots=roots,
    )


async def top_traces(
    engine: AsyncEngine, window: Window, team: str | None, limit: int
) -> TopTraces:
    """The `limit` most expensive traces with a call in the window, most expensive first."""
    trace = TraceRow
    statement = (
        select(trace)
        .where(trace.started_at < window.until, trace.last_call_at >= window.since)
        .order_by(trace.cost_usd.desc(), trace.trace_id, trace.team)
        .limit(limit)
    )
    if team is not None:
        statement = statement.where(trace.team == team)
    async with AsyncSession(engine) as session:
        rows = (await session.scalars(statement)).all()
    return TopTraces(
        since=window.since,
        until=window.until,
        data=[
            TraceTotals(
                trace_id=row.trace_id,
                team=row.team,
                started_at=utc(row.started_at),
                last_call_at=utc(row.last_call_at),
                calls=row.calls,
                background_calls=max(row.calls - 1, 0),
                unpriced_calls=row.unpriced_calls,
                input_tokens=row.input_tokens,
                output_tokens=row.output_tokens,
                cost_usd=row.cost_usd,
            )
            for row in rows
        ],
    )


def _call(row: UsageRow) -> TraceCall:
    return TraceCall(
        request_id=row.request_id,
        parent_id=row.parent_id,
        created_at=utc(row.created_at),
        model=row.model,
        endpoint=row.endpoint,
        status=row.status,
        input_tokens=row.input_tokens,
        cached_input_tokens=row.cached_input_tokens,
        output_tokens=row.output_tokens,
        reasoning_tokens=row.reasoning_tokens,
        cost_usd=row.cost_usd,
        children=[],
    )


def _acyclic_parents(rows: Sequence[UsageRow]) -> dict[str, str | None]:
    """Each call's parent within the trace, or None: a parent outside the trace (a W3C span) or
    a link that would close a loop (parent ids come from client headers) makes a root."""
    known = {row.request_id for row in rows}
    parents: dict[str, str | None] = {
        row.request_id: row.parent_id if row.parent_id in known else None for row in rows
    }
    settled: set[str] = set()
    for start in parents:
        path: list[str] = []
        on_path: set[str] = set()
        node: str | None = start
        while node is not None and node not in settled and node not in on_path:
            path.append(node)
            on_path.add(node)
            node = parents[node]
        if node is not None and node in on_path:
            parents[node] = None  # the loop closes here: cut it
        settled.update(path)
    return parents
