"""`metering-proxy report`: a usage summary read straight from the ledger database.

The same summary as `GET /usage/summary`, as an aligned table, CSV or the API's JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import sys
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from proxy.cli_support import command_settings, database_failure
from proxy.clock import utc_now
from proxy.ledger.database import DATABASE_ERRORS, create_ledger_engine
from proxy.ledger.reports.documents import Summary, UsageTotals
from proxy.ledger.reports.filters import (
    Dimension,
    ReportError,
    UsageFilter,
    group_by,
    instant,
    usage_filter,
    window,
)
from proxy.ledger.reports.summary import summarize
from proxy.ledger.whatif import Scenario, WhatIf, WhatIfDocument, what_if_document
from proxy.pricing.catalog import PriceCatalog
from proxy.settings import Settings
from proxy.terminal import aligned_table
from proxy.whatif_cli import render_what_if

_NUMBERS = (
    ("calls", "calls"),
    ("unpriced", "unpriced_calls"),
    ("input", "input_tokens"),
    ("cached", "cached_input_tokens"),
    ("output", "output_tokens"),
    ("reasoning", "reasoning_tokens"),
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `report` subcommand."""
    report = commands.add_parser(
        "report", help="summarise usage from the ledger database ($METERING_DATABASE_URL)"
    )
    report.add_argument(
        "--group-by",
        default="team,model",
        help="comma-separated: team, model, upstream, user, endpoint, day, hour, tag:KEY "
        "(default: team,model; '' for one total)",
    )
    report.add_argument(
        "--since",
        help="ISO 8601 time or a time ago: 30m, 24h, 7d, 2w (default: 30 days before --until)",
    )
    report.add_argument("--until", help="ISO 8601 time or a time ago (default: now)")
    for name in ("team", "model", "upstream", "endpoint", "user"):
        report.add_argument(f"--{name}", help=f"only calls with this {name}")
    report.add_argument(
        "--tag",
        action="append",
        default=[],
        help="only calls with this tag, KEY:VALUE (repeatable)",
    )
    report.add_argument("--format", choices=sorted(_RENDERERS), default="table")
    what_if = report.add_argument_group(
        "what-if", "reprice the window instead (from the hourly rollup; team, model, upstream)"
    )
    what_if.add_argument("--to-model", help="as if the calls had gone to this model")
    what_if.add_argument("--batch", action="store_true", help="as if run through the Batch API")
    what_if.add_argument(
        "--cache-prompt",
        action="store_true",
        help="as if instructions and tools had been read from the prompt cache",
    )
    report.set_defaults(handler=_report)


def _report(arguments: argparse.Namespace) -> int:
    settings = command_settings()
    if settings is None:
        return 2
    database_url = settings.environment.database_url
    try:
        usage, dimensions = _request(arguments, utc_now())
        if arguments.to_model or arguments.batch or arguments.cache_prompt:
            scenario = Scenario(arguments.to_model, arguments.batch, arguments.cache_prompt)
            document = asyncio.run(_reprice(settings, scenario, usage, dimensions))
            sys.stdout.write(render_what_if(document, arguments.format))
            return 0
        summary = asyncio.run(_summarize(database_url, usage, dimensions))
    except ReportError as error:
        print(f"metering-proxy report: {error.message}", file=sys.stderr)
        return 2
    except DATABASE_ERRORS as error:
        return database_failure(database_url, error, "read")
    sys.stdout.write(_RENDERERS[arguments.format](summary))
    return 0


def _request(
    arguments: argparse.Namespace, now: datetime
) -> tuple[UsageFilter, tuple[Dimension, ...]]:
    span = window(
        instant(arguments.since, now, "since"), instant(arguments.until, now, "until"), now
    )
    usage = usage_filter(
        span,
        team=arguments.team,
        model=arguments.model,
        upstream=arguments.upstream,
        endpoint=arguments.endpoint,
        user=arguments.user,
        tags=arguments.tag,
    )
    return usage, group_by(arguments.group_by)


async def _summarize(
    database_url: str, usage: UsageFilter, dimensions: tuple[Dimension, ...]
) -> Summary:
    engine = create_ledger_engine(database_url)
    try:
        return await summarize(engine, usage, dimensions)
    finally:
        await engine.dispose()


async def _reprice(
    settings: Settings, scenario: Scenario, usage: UsageFilter, dimensions: tuple[Dimension, ...]
) -> WhatIfDocument:
    engine = create_ledger_engine(settings.environment.database_url)
    upstreams = {upstream.config.name: upstream.config for upstream in settings.upstreams}
    try:
        repricer = WhatIf(engine, PriceCatalog(settings.proxy.prices), upstreams)
        return what_if_document(await repricer.report(scenario, usage, dimensions))
    finally:
        await engine.dispose()


def render_json(summary: Summary) -> str:
    """The document `GET /usage/summary` answers."""
    return summary.model_dump_json(indent=2) + "\n"


def render_csv(summary: Summary) -> str:
    """One row per group under a header; every number exact, as in the JSON."""
    fields = list(UsageTotals.model_fields)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*summary.group_by, *fields])
    for group in summary.groups:
        values = group.model_dump(mode="json")
        writer.writerow(
            [*(group.group[label] for label in summary.group_by), *(values[f] for f in fields)]
        )
    return out.getvalue()


def render_table(summary: Summary) -> str:
    """An aligned table for a terminal, with a totals row."""
    labels = summary.group_by or [""]
    share = "prompt share*" if summary.source == "rollup" else "prompt share"
    header = [*labels, *(title for title, _ in _NUMBERS), "cost", share]
    places = usd_places([*(group.cost_usd for group in summary.groups), summary.totals.cost_usd])
    rows = [
        [*(_text(group.group[label]) for label in summary.group_by), *_figures(group, places)]
        for group in summary.groups
        if summary.group_by  # without dimensions the one group is the totals row
    ]
    total = ["total", *([""] * (len(labels) - 1)), *_figures(summary.totals, places)]
    since, until = (f"{moment:%Y-%m-%d %H:%M}" for moment in (summary.since, summary.until))
    source = "hourly rollup" if summary.source == "rollup" else "records"
    title = f"Usage {since} to {until} UTC (from the {source})"
    out = [title, "", *aligned_table(header, rows, total, text_columns=len(labels))]
    notes = []
    if summary.totals.unpriced_calls:
        notes.append(f"{summary.totals.unpriced_calls:,} calls have no known price: not in cost.")
    if summary.source == "rollup":
        notes.append("* of all input tokens: the rollup does not keep which calls had a split.")
    return "\n".join([*out, *([""] if notes else []), *notes]) + "\n"


def usd_places(amounts: list[Decimal]) -> int:
    """One number of decimals for a column: cents, or enough for the smallest amount in it to
    show (calls cost fractions of a cent), so that the decimal points line up."""
    smallest = min((amount for amount in amounts if amount), default=Decimal(1))
    return 2 if smallest >= 1 else 4 if smallest >= Decimal("0.01") else 6


def _figures(totals: UsageTotals, places: int) -> list[str]:
    numbers = [f"{getattr(totals, name):,}" for _, name in _NUMBERS]
    share = "-" if totals.prompt_share is None else f"{totals.prompt_share:.1%}"
    return [*numbers, f"${totals.cost_usd:,.{places}f}", share]


def _text(value: str | None) -> str:
    return "(none)" if value is None else value


_RENDERERS: dict[str, Callable[[Summary], str]] = {
    "table": render_table,
    "csv": render_csv,
    "json": render_json,
}
