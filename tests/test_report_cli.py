"""`metering-proxy report` as users run it: a process reading the ledger its environment names."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from tests.conftest import ProxyFactory
from tests.ledger.test_reports import call, fill_ledger, write
from tests.support.process import CLI

WINDOW = ["--since", "2026-11-02T00:00:00Z", "--until", "2026-11-04T00:00:00Z"]
INTEGER_COLUMNS = (
    "calls",
    "unpriced_calls",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "prompt_system_tokens",
    "prompt_tools_tokens",
)


async def report(*arguments: str, database_url: str, cwd: Path) -> tuple[int, str, str]:
    """Run `metering-proxy report ARGUMENTS`; its exit code, stdout and stderr."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("METERING_", "OPENAI_"))}
    process = await asyncio.create_subprocess_exec(
        CLI,
        "report",
        *arguments,
        cwd=cwd,
        env={**inherited, "METERING_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def report_json(*arguments: str, database_url: str, cwd: Path) -> dict[str, Any]:
    code, out, err = await report(
        *arguments, "--format", "json", database_url=database_url, cwd=cwd
    )
    assert code == 0, err
    document: dict[str, Any] = json.loads(out)
    return document


async def test_the_csv_parses_back_to_the_totals_of_the_json(
    database_url: str, tmp_path: Path
) -> None:
    await fill_ledger(database_url)
    arguments = ["--group-by", "team,tag:feature", *WINDOW]

    code, out, err = await report(
        *arguments, "--format", "csv", database_url=database_url, cwd=tmp_path
    )
    document = await report_json(*arguments, database_url=database_url, cwd=tmp_path)

    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == len(document["groups"]) == 6
    totals = document["totals"]
    for column in INTEGER_COLUMNS:
        assert sum(int(row[column]) for row in rows) == totals[column], column
    assert sum(Decimal(row["cost_usd"]) for row in rows) == Decimal(totals["cost_usd"])
    assert totals["cost_usd"] == "0.043608"
    # Each row is its group, with the JSON's exact strings; a missing tag is an empty cell.
    for row, group in zip(rows, document["groups"], strict=True):
        assert (row["team"], row["tag:feature"] or None) == tuple(group["group"].values())
        assert row["cost_usd"] == group["cost_usd"]


async def test_the_json_is_the_document_the_http_summary_answers(
    database_url: str, tmp_path: Path, start_proxy: ProxyFactory
) -> None:
    await fill_ledger(database_url)
    url = start_proxy(environ={"METERING_DATABASE_URL": database_url}).removesuffix("/v1")
    params = {
        "group_by": "team,model",
        "since": "2026-11-02T00:00:00Z",
        "until": "2026-12-02T00:00:00Z",
    }

    document = await report_json(
        "--group-by", "team,model", "--since", params["since"], "--until", params["until"],
        database_url=database_url, cwd=tmp_path,
    )  # fmt: skip
    async with httpx.AsyncClient() as client:
        answer = (await client.get(f"{url}/usage/summary", params=params)).json()

    assert document == answer
    assert document["source"] == "rollup"


async def test_the_table_aligns_groups_and_a_totals_row_with_dollars_and_thousands(
    database_url: str, tmp_path: Path
) -> None:
    await fill_ledger(database_url)

    code, out, _ = await report(
        "--group-by", "team", *WINDOW, database_url=database_url, cwd=tmp_path
    )

    assert code == 0
    assert out.splitlines() == [
        "Usage 2026-11-02 00:00 to 2026-11-04 00:00 UTC (from the records)",
        "",
        "team    calls  unpriced  input  cached  output  reasoning       cost  prompt share",
        "------  -----  --------  -----  ------  ------  ---------  ---------  ------------",
        "ads         2         1  2,800   1,000     380        100  $0.030000         50.0%",
        "agents      4         1    650     100      65         10  $0.003100         35.0%",
        "search      3         0  1,900     200     150          0  $0.010508         33.3%",
        "------  -----  --------  -----  ------  ------  ---------  ---------  ------------",
        "total       9         2  5,350   1,300     595        110  $0.043608         41.7%",
        "",
        "2 calls have no known price: not in cost.",
    ]


async def test_dollar_amounts_show_cents_when_no_amount_is_below_a_dollar(
    database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    day = datetime(2026, 11, 2, 9, tzinfo=UTC)
    try:
        await write(engine, [
            call("a", day, "search", "gpt-4o", tokens=(1_234_567, 0, 0, 0), cost="1234.5"),
            call("b", day, "ads", "gpt-4o", tokens=(1000, 0, 0, 0), cost="2.005"),
        ])  # fmt: skip
    finally:
        await engine.dispose()

    code, out, _ = await report(
        "--group-by", "team", *WINDOW, database_url=database_url, cwd=tmp_path
    )

    assert code == 0
    lines = out.splitlines()
    assert lines[4].split() == ["ads", "1", "0", "1,000", "0", "0", "0", "$2.00", "-"]
    assert lines[5].split() == ["search", "1", "0", "1,234,567", "0", "0", "0", "$1,234.50", "-"]
    assert lines[7].split() == ["total", "2", "0", "1,235,567", "0", "0", "0", "$1,236.50", "-"]


async def test_filters_and_a_relative_since_choose_the_calls(
    database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    now = datetime.now(UTC)
    try:
        await write(engine, [
            call("hour-ago", now - timedelta(hours=1), "search", "gpt-4o", cost="0.5"),
            call("day-ago", now - timedelta(hours=30), "search", "gpt-4o", cost="0.25"),
            call("other", now - timedelta(hours=1), "ads", "gpt-4o", cost="0.125"),
        ])  # fmt: skip
    finally:
        await engine.dispose()

    last_day = await report_json(
        "--since", "24h", "--team", "search", database_url=database_url, cwd=tmp_path
    )
    last_week = await report_json(
        "--since", "7d", "--group-by", "", database_url=database_url, cwd=tmp_path
    )

    assert (last_day["totals"]["calls"], last_day["totals"]["cost_usd"]) == (1, "0.5")
    assert (last_week["totals"]["calls"], last_week["totals"]["cost_usd"]) == (3, "0.875")
    assert last_week["group_by"] == []


async def test_a_bad_option_exits_2_with_the_reason(
    sqlite_database_url: str, tmp_path: Path
) -> None:
    await upgrade_to_head(sqlite_database_url)

    since = await report("--since", "yesterday", database_url=sqlite_database_url, cwd=tmp_path)
    grouping = await report("--group-by", "color", database_url=sqlite_database_url, cwd=tmp_path)

    assert since[0] == 2 and "`since` must be an ISO 8601 time" in since[2]
    assert grouping[0] == 2 and "`group_by` takes a comma-separated list" in grouping[2]


async def test_an_unreachable_ledger_exits_1_naming_it(tmp_path: Path) -> None:
    code, _, err = await report(
        database_url="postgresql+asyncpg://postgres:secret@127.0.0.1:1/ledger", cwd=tmp_path
    )

    assert code == 1
    assert "cannot read the ledger database postgresql+asyncpg://postgres@127.0.0.1:1/ledger" in err
    assert "secret" not in err
