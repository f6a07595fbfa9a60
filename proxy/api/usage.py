"""`/usage/*`: usage reports over the ledger, as JSON (errors in OpenAI's shape)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Concatenate, ParamSpec

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from proxy.api.common import OpenAIErrorRoute, error_responses
from proxy.api.report_runner import jobs
from proxy.api.report_runner.runner import ReportRunner
from proxy.api.report_runner.worker import ReportLedger
from proxy.api.usage_readers import UsageReader, usage_reader
from proxy.clock import Clock
from proxy.ledger.reports.documents import RequestPage, Summary, TopTraces, TraceTree
from proxy.ledger.reports.filters import (
    UsageFilter,
    group_by,
    text_value,
    usage_filter,
    window,
)
from proxy.ledger.reports.records import MAX_PAGE_SIZE
from proxy.ledger.reports.traces import MAX_TOP_TRACES
from proxy.ledger.whatif import Scenario, WhatIfDocument

logger = logging.getLogger(__name__)
P = ParamSpec("P")
# nginx's status for a request whose client left before the answer: nobody reads it.
CLIENT_CLOSED_REQUEST = 499


router = APIRouter(
    prefix="/usage",
    tags=["usage"],
    route_class=OpenAIErrorRoute,
    # Checked before any parameter, so that a caller without a key learns nothing else.
    dependencies=[Depends(usage_reader)],
    responses=error_responses(
        _400="A parameter is invalid.",
        _401="Neither the admin key nor a usable proxy key.",
        _403="A team's proxy key asked for another team's usage.",
        _429="This team has its most reports running or waiting (`too_many_reports`).",
        _503="The ledger database is unavailable, or too many reports are running or waiting "
        "(`reports_busy`; both with `Retry-After`).",
        _504="The report did not end within `[reports] timeout_seconds`.",
    ),
)

Since = Annotated[
    datetime | None,
    Query(
        description="Start of the window, inclusive; ISO 8601, UTC unless an offset is given. "
        "Default: 30 days before `until`."
    ),
]
Until = Annotated[datetime | None, Query(description="End of the window, exclusive; default: now.")]


def _now(request: Request) -> datetime:
    """The app's clock: a window's default end."""
    clock: Clock = request.app.state.clock
    return clock()


Reader = Annotated[UsageReader, Depends(usage_reader)]
Now = Annotated[datetime, Depends(_now)]


async def _usage_filter(
    reader: Reader,
    now: Now,
    since: Since = None,
    until: Until = None,
    team: Annotated[str | None, Query(description="Only this team's calls.")] = None,
    model: Annotated[str | None, Query(description="Only calls to this model.")] = None,
    upstream: Annotated[str | None, Query(description="Only calls to this upstream.")] = None,
    endpoint: Annotated[
        str | None, Query(description="Only this endpoint family, e.g. `chat`.")
    ] = None,
    user: Annotated[str | None, Query(description="Only this end user's calls.")] = None,
    tag: Annotated[
        list[str] | None,
        Query(description="Only calls with this tag, as KEY:VALUE; repeat to require several."),
    ] = None,
) -> UsageFilter:
    """The window and filters of the query parameters, within the teams the reader may read."""
    return usage_filter(
        window(since, until, now),
        team=reader.team_filter(text_value(team, "team")),
        model=model,
        upstream=upstream,
        endpoint=endpoint,
        user=user,
        tags=tag or (),
    )


Filters = Annotated[UsageFilter, Depends(_usage_filter)]
# As X-Metering-Trace-Id takes them (request ids, which name one-call traces, are hex), less ids
# of dots only: clients would resolve them away as `.` and `..` path segments.
TRACE_ID_PATTERN = r"^[A-Za-z0-9_.:\-]*[A-Za-z0-9_:\-][A-Za-z0-9_.:\-]*$"


async def _client_left(request: Request) -> None:
    """Returns once the client has hung up (the GET has no body to read first)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _report(
    request: Request,
    reader: UsageReader,
    report: Callable[Concatenate[ReportLedger, P], Awaitable[bytes]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> Response:
    """The report's JSON document, run by the app's report runner on the reader's account; a
    client that hangs up stops its report."""
    runner: ReportRunner = request.app.state.reports
    document = asyncio.ensure_future(runner.run(reader.team, report, *args, **kwargs))
    left = asyncio.ensure_future(_client_left(request))
    try:
        done, _ = await asyncio.wait((document, left), return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        if not document.done():
            document.cancel()
    if document not in done:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return Response(document.result(), media_type="application/json")


@router.get("/summary", response_model=Summary)
async def summary(
    request: Request,
    reader: Reader,
    usage: Filters,
    group_by_: Annotated[
        str | None,
        Query(
            alias="group_by",
            description="Comma-separated: team, model, upstream, user, endpoint, day, hour, "
            "tag:KEY. None: one group of every call.",
        ),
    ] = None,
) -> Response:
    """Calls, tokens, cost and hidden-prompt share, grouped, with totals."""
    return await _report(request, reader, jobs.summary, usage, group_by(group_by_))


@router.get("/requests", response_model=RequestPage)
async def requests(
    request: Request,
    reader: Reader,
    usage: Filters,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size.")] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> Response:
    """The records, newest first, a page at a time."""
    return await _report(request, reader, jobs.requests, usage, limit, cursor or None)


@router.get(
    "/traces/{trace_id}",
    response_model=TraceTree,
    responses=error_responses(_404="No call of this trace is in the ledger."),
)
async def trace(
    request: Request,
    reader: Reader,
    trace_id: Annotated[
        str, Path(pattern=TRACE_ID_PATTERN, max_length=128, description="The trace's id.")
    ],
    team: Annotated[
        str | None,
        Query(
            description="The team whose trace it is; needed with the admin key when several "
            "teams sent this trace id (a 400 `trace_team_required` names them)."
        ),
    ] = None,
) -> Response:
    """A team's trace: its calls as a tree, with per-call and total cost (a team's key: its
    team's trace)."""
    team_kept = reader.team_filter(text_value(team, "team"))
    return await _report(request, reader, jobs.trace, trace_id, team_kept)


@router.get("/top-traces", response_model=TopTraces)
async def top(
    request: Request,
    reader: Reader,
    now: Now,
    since: Since = None,
    until: Until = None,
    team: Annotated[str | None, Query(description="Only this team's traces.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_TOP_TRACES, description="How many.")] = 10,
) -> Response:
    """The most expensive traces with a call in the window."""
    span = window(since, until, now)
    team_kept = reader.team_filter(text_value(team, "team"))
    return await _report(request, reader, jobs.top, span, team_kept, limit)


@router.get("/what-if", response_model=WhatIfDocument)
async def what_if(
    request: Request,
    reader: Reader,
    usage: Filters,
    to_model: Annotated[
        str | None,
        Query(max_length=256, description="Reprice on this model (`model` filters the calls)."),
    ] = None,
    batch: Annotated[bool, Query(description="As if run through the Batch API.")] = False,
    cache_prompt: Annotated[
        bool, Query(description="As if instructions and tools were read from the prompt cache.")
    ] = False,
    group_by_: Annotated[
        str | None,
        Query(alias="group_by", description="Comma-separated: team, model, upstream, day."),
    ] = None,
) -> Response:
    """What the window's usage would have cost on another model, in batch, or cached."""
    scenario = Scenario(
        model=text_value(to_model, "to_model"), batch=batch, cache_prompt=cache_prompt
    )
    return await _report(request, reader, jobs.what_if, scenario, usage, group_by(group_by_))
