"""The `/usage/*` reports as the reports process runs them: each answers its JSON document, so
that the proxy's event loop only relays bytes."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from proxy.api.report_runner.worker import ReportLedger
from proxy.errors import ProxyError
from proxy.ledger.reports.filters import Dimension, UsageFilter, Window
from proxy.ledger.reports.records import list_records
from proxy.ledger.reports.summary import summarize
from proxy.ledger.reports.traces import top_traces, trace_tree
from proxy.ledger.whatif import Scenario, what_if_document


class TraceNotFound(ProxyError):
    status = 404
    error_type = "invalid_request_error"
    code = "trace_not_found"


def _json(document: BaseModel) -> bytes:
    return document.model_dump_json().encode()


async def summary(
    ledger: ReportLedger, usage: UsageFilter, dimensions: Sequence[Dimension]
) -> bytes:
    """`/usage/summary`."""
    return _json(await summarize(ledger.engine, usage, dimensions))


async def requests(
    ledger: ReportLedger, usage: UsageFilter, limit: int, cursor: str | None
) -> bytes:
    """`/usage/requests`."""
    return _json(await list_records(ledger.engine, usage, limit, cursor))


async def trace(ledger: ReportLedger, trace_id: str, team: str | None) -> bytes:
    """`/usage/traces/{trace_id}`."""
    tree = await trace_tree(ledger.engine, trace_id, team)
    if tree is None:
        raise TraceNotFound(f"No trace `{trace_id}` in the ledger.", param="trace_id")
    return _json(tree)


async def top(ledger: ReportLedger, window: Window, team: str | None, limit: int) -> bytes:
    """`/usage/top-traces`."""
    return _json(await top_traces(ledger.engine, window, team, limit))


async def what_if(
    ledger: ReportLedger, scenario: Scenario, usage: UsageFilter, dimensions: Sequence[Dimension]
) -> bytes:
    """`/usage/what-if`."""
    return _json(what_if_document(await ledger.what_if.report(scenario, usage, dimensions)))
