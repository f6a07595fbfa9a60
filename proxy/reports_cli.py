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
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy.exc import SQLAlchemyError

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import describe_database
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
from proxy.settings import ConfigError, load_settings

# asyncpg's connection errors are OSErrors.
_DATABASE_ERRORS = (OSError, SQLAlchemyError)
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
    report.set_defaults(handler=_report)


def _report(arguments: argparse.Namespace) -> int:
    try:
        database_url = load_settings().environment.database_url
    except ConfigError as error:
        print(f"metering-proxy: {error}", file=sys.stderr)
        return 2
    try:
        usage, dimensions = _request(arguments, datetime.now(UTC))
    except ReportError as error:
        print(f"metering-proxy report: {error.message}", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(_summarize(database_url, usage, dimensions))
    except _DATABASE_ERRORS as error:
        print(
            f"metering-proxy: cannot read the ledger database {describe_database(database_url)}: "
            f"{error}",
            file=sys.stderr,
        )
        return 1
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
    places = _usd_places([*(group.cost_usd for group in summary.groups), summary.totals.cost_usd])
    rows = [
        [*(_text(group.group[label]) for label in summary.group_by), *_figures(group, places)]
        for group in summary.groups
        if summary.group_by  # without dimensions the one group is the totals row
    ]
    total = ["total", *([""] * (len(labels) - 1)), *_figures(summary.totals, places)]
    widths = [max(len(row[i]) for row in (header, *rows, total)) for i in range(len(header))]
    texts = len(labels)

    def line(cells: list[str]) -> str:
        aligned = [
            cell.ljust(width) if i < texts else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(aligned).rstrip()

    rule = "  ".join("-" * width for width in widths)
    since, until = (f"{moment:%Y-%m-%d %H:%M}" for moment in (summary.since, summary.until))
    source = "hourly rollup" if summary.source == "rollup" else "records"
    out = [f"Usage {since} to {until} UTC (from the {source})", "", line(header), rule]
    if rows:
        out += [*(line(row) for row in rows), rule]
    out.append(line(total))
    notes = []
    if summary.totals.unpriced_calls:
        notes.append(f"{summary.totals.unpriced_calls:,} calls have no known price: not in cost.")
    if summary.source == "rollup":
        notes.append("* of all input tokens: the rollup does not keep which calls had a split.")
    return "\n".join([*out, *([""] if notes else []), *notes]) + "\n"


def _figures(totals: UsageTotals, usd_places: int) -> list[str]:
    numbers = [f"{getattr(totals, name):,}" for _, name in _NUMBERS]
    share = "-" if totals.prompt_share is None else f"{totals.prompt_share:.1%}"
    return [*numbers, f"${totals.cost_usd:,.{usd_places}f}", share]


def _usd_places(amounts: list[Decimal]) -> int:
    """One number of decimals for a column: cents, or enough for the smallest amount in it to
    show (calls cost fractions of a cent), so that the decimal points line up."""
    smallest = min((amount for amount in amounts if amount), default=Decimal(1))
    return 2 if smallest >= 1 else 4 if smallest >= Decimal("0.01") else 6


def _text(value: str | None) -> str:
    return "(none)" if value is None else value


_RENDERERS: dict[str, Callable[[Summary], str]] = {
    "table": render_table,
    "csv": render_csv,
    "json": render_json,
}
