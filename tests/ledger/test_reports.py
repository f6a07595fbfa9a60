"""Usage reports over a ledger of known calls, on SQLite and on Postgres: every number checked."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine

from proxy.ledger.database import create_ledger_engine
from proxy.ledger.migrations import upgrade_to_head
from proxy.ledger.models import UsageRow
from proxy.ledger.reports.documents import Summary
from proxy.ledger.reports.filters import (
    ReportError,
    UsageFilter,
    group_by,
    instant,
    usage_filter,
    window,
)
from proxy.ledger.reports.records import decode_cursor, encode_cursor, list_records
from proxy.ledger.reports.summary import summarize
from proxy.ledger.reports.traces import TraceOfSeveralTeams, top_traces, trace_tree
from proxy.ledger.rows import row_of
from proxy.ledger.store import LedgerStore
from proxy.metering.usage import Price, PromptSplit, Usage, UsageRecord

DAY1 = datetime(2026, 11, 2, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
# Covers every call below; exactly two days, so it reads the records.
SINCE, UNTIL = DAY1, DAY1 + timedelta(days=2)
MONTH_UNTIL = DAY1 + timedelta(days=30)
NOW = DAY1 + timedelta(days=40)


def call(
    request_id: str,
    at: datetime,
    team: str,
    model: str,
    *,
    upstream: str = "openai",
    endpoint: str = "chat",
    user: str | None = None,
    tags: dict[str, str] | None = None,
    tokens: tuple[int, int, int, int] = (0, 0, 0, 0),
    cost: str | None = None,
    split: tuple[int, int, int, int] | None = None,
    trace_id: str | None = None,
    parent_id: str | None = None,
) -> UsageRecord:
    """A call; `tokens` are (input, cached input, output, reasoning)."""
    input_tokens, cached, output, reasoning = tokens
    return UsageRecord(
        request_id=request_id,
        created_at=at,
        team=team,
        upstream=upstream,
        endpoint=endpoint,
        model=model,
        status="200",
        usage=Usage(
            input_tokens=input_tokens,
            cached_input_tokens=cached,
            output_tokens=output,
            reasoning_tokens=reasoning,
        ),
        price=None if cost is None else Price(Decimal(cost), f"config:{model}"),
        latency_seconds=0.5,
        user=user,
        tags=tags or {},
        trace_id=trace_id,
        parent_id=parent_id,
        prompt_split=None if split is None else PromptSplit(*split),
    )


def at(day: datetime, hour: int, minute: int = 0) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


def agent_step(
    request_id: str,
    minute: int,
    tokens: tuple[int, int, int, int],
    cost: str | None,
    split: tuple[int, int, int, int],
    parent_id: str | None,
) -> UsageRecord:
    """A call of trace-1, an agent's run on day 2 from 12:00."""
    return call(
        request_id, at(DAY2, 12, minute), "agents", "gpt-4o", user="dave",
        tags={"feature": "agent"}, tokens=tokens, cost=cost, split=split, trace_id="trace-1",
        parent_id=parent_id,
    )  # fmt: skip


CALLS = [
    call(
        "r1", at(DAY1, 10, 15), "search", "gpt-4o", user="alice", tags={"feature": "search"},
        tokens=(1000, 200, 100, 0), cost="0.0100", split=(300, 100, 400, 200),
    ),
    call(
        "r2", at(DAY1, 10, 45), "search", "gpt-4o-mini", user="bob",
        tags={"feature": "summarize"}, tokens=(500, 0, 50, 0), cost="0.0005",
        split=(100, 0, 300, 100),
    ),
    call(
        "r3", at(DAY1, 11, 5), "ads", "gpt-4o", upstream="azure", endpoint="responses",
        user="alice", tags={"feature": "search", "env": "prod"}, tokens=(2000, 1000, 300, 100),
        cost="0.0300", split=(500, 500, 0, 1000),
    ),
    call("r4", at(DAY2, 9), "ads", "llama-3", upstream="local", tokens=(800, 0, 80, 0)),
    call(
        "r5", at(DAY2, 9, 30), "search", "text-embedding-3-small", endpoint="embeddings",
        user="carol", tags={"feature": "search"}, tokens=(400, 0, 0, 0), cost="0.000008",
    ),
    # trace-1: a root, its child and its grandchild (unpriced).
    agent_step("t1", 0, (100, 0, 10, 0), "0.001", (50, 20, 0, 30), parent_id=None),
    agent_step("t2", 1, (200, 0, 20, 0), "0.002", (50, 20, 100, 30), parent_id="t1"),
    agent_step("t3", 2, (300, 100, 30, 10), None, (50, 20, 200, 30), parent_id="t2"),
    call(
        "t4", at(DAY2, 13), "agents", "gpt-4o-mini", user="dave", tokens=(50, 0, 5, 0),
        cost="0.0001", trace_id="trace-2",
    ),
]  # fmt: skip


async def write(engine: AsyncEngine, records: Sequence[UsageRecord]) -> None:
    await LedgerStore(engine).write([row_of(record) for record in records])


async def fill_ledger(database_url: str) -> None:
    """Migrate the database and store `CALLS` in it."""
    await upgrade_to_head(database_url)
    engine = create_ledger_engine(database_url)
    try:
        await write(engine, CALLS)
    finally:
        await engine.dispose()


@pytest.fixture
async def ledger(engine: AsyncEngine) -> AsyncEngine:
    """An engine on a ledger holding `CALLS`."""
    await write(engine, CALLS)
    return engine


def between(since: datetime = SINCE, until: datetime = UNTIL, **filters: Any) -> UsageFilter:
    return usage_filter(window(since, until, NOW), **filters)


async def report(
    engine: AsyncEngine, dimensions: str = "", usage: UsageFilter | None = None
) -> Summary:
    return await summarize(engine, usage or between(), group_by(dimensions))


def figures(summary: Summary) -> dict[tuple[str | None, ...], tuple[int, str]]:
    """(calls, cost) by group key."""
    return {
        tuple(group.group.values()): (group.calls, group.model_dump(mode="json")["cost_usd"])
        for group in summary.groups
    }


async def test_a_summary_by_team_gives_every_number_of_each_team(ledger: AsyncEngine) -> None:
    summary = await report(ledger, "team")

    assert summary.source == "records"
    assert summary.group_by == ["team"]
    assert summary.model_dump(mode="json")["groups"] == [
        {
            "group": {"team": "ads"},
            "calls": 2,
            "unpriced_calls": 1,
            "input_tokens": 2800,
            "cached_input_tokens": 1000,
            "output_tokens": 380,
            "reasoning_tokens": 100,
            "cost_usd": "0.03",
            "prompt_system_tokens": 500,
            "prompt_tools_tokens": 500,
            "prompt_split_input_tokens": 2000,
            "prompt_share": 0.5,
        },
        {
            "group": {"team": "agents"},
            "calls": 4,
            "unpriced_calls": 1,
            "input_tokens": 650,
            "cached_input_tokens": 100,
            "output_tokens": 65,
            "reasoning_tokens": 10,
            "cost_usd": "0.0031",
            "prompt_system_tokens": 150,
            "prompt_tools_tokens": 60,
            "prompt_split_input_tokens": 600,
            "prompt_share": 0.35,
        },
        {
            "group": {"team": "search"},
            "calls": 3,
            "unpriced_calls": 0,
            "input_tokens": 1900,
            "cached_input_tokens": 200,
            "output_tokens": 150,
            "reasoning_tokens": 0,
            "cost_usd": "0.010508",
            "prompt_system_tokens": 400,
            "prompt_tools_tokens": 100,
            "prompt_split_input_tokens": 1500,
            "prompt_share": 0.333333,
        },
    ]


async def test_the_totals_add_up_every_call_and_leave_unpriced_calls_out_of_the_cost(
    ledger: AsyncEngine,
) -> None:
    summary = await report(ledger, "team")

    assert summary.totals.model_dump(mode="json") == {
        "calls": 9,
        "unpriced_calls": 2,
        "input_tokens": 5350,
        "cached_input_tokens": 1300,
        "output_tokens": 595,
        "reasoning_tokens": 110,
        "cost_usd": "0.043608",
        "prompt_system_tokens": 1050,
        "prompt_tools_tokens": 660,
        "prompt_split_input_tokens": 4100,
        "prompt_share": 0.417073,
    }
    assert summary.totals.cost_usd == Decimal("0.043608")


async def test_without_grouping_one_group_holds_every_call(ledger: AsyncEngine) -> None:
    summary = await report(ledger)

    (group,) = summary.groups
    assert group.group == {}
    assert group.model_dump(exclude={"group"}) == summary.totals.model_dump()


@pytest.mark.parametrize(
    ("dimension", "expected"),
    [
        (
            "model",
            {
                ("gpt-4o",): (5, "0.043"),
                ("gpt-4o-mini",): (2, "0.0006"),
                ("llama-3",): (1, "0"),
                ("text-embedding-3-small",): (1, "0.000008"),
            },
        ),
        (
            "upstream",
            {("azure",): (1, "0.03"), ("local",): (1, "0"), ("openai",): (7, "0.013608")},
        ),
        (
            "endpoint",
            {
                ("chat",): (7, "0.0136"),
                ("embeddings",): (1, "0.000008"),
                ("responses",): (1, "0.03"),
            },
        ),
        (
            "user",
            {
                ("alice",): (2, "0.04"),
                ("bob",): (1, "0.0005"),
                ("carol",): (1, "0.000008"),
                ("dave",): (4, "0.0031"),
                (None,): (1, "0"),
            },
        ),
        (
            "tag:feature",
            {
                ("agent",): (3, "0.003"),
                ("search",): (3, "0.040008"),
                ("summarize",): (1, "0.0005"),
                (None,): (2, "0.0001"),
            },
        ),
        ("tag:env", {("prod",): (1, "0.03"), (None,): (8, "0.013608")}),
        (
            "day",
            {("2026-11-02T00:00:00Z",): (3, "0.0405"), ("2026-11-03T00:00:00Z",): (6, "0.003108")},
        ),
        (
            "hour",
            {
                ("2026-11-02T10:00:00Z",): (2, "0.0105"),
                ("2026-11-02T11:00:00Z",): (1, "0.03"),
                ("2026-11-03T09:00:00Z",): (2, "0.000008"),
                ("2026-11-03T12:00:00Z",): (3, "0.003"),
                ("2026-11-03T13:00:00Z",): (1, "0.0001"),
            },
        ),
    ],
)
async def test_a_summary_groups_by_each_dimension(
    ledger: AsyncEngine, dimension: str, expected: dict[tuple[str | None, ...], tuple[int, str]]
) -> None:
    summary = await report(ledger, dimension)

    assert figures(summary) == expected
    # Groups come in the order of their values; calls without the value come last.
    assert list(figures(summary)) == list(expected)


async def test_a_summary_groups_by_several_dimensions_at_once(ledger: AsyncEngine) -> None:
    summary = await report(ledger, "team,day,tag:feature")

    assert summary.group_by == ["team", "day", "tag:feature"]
    assert figures(summary) == {
        ("ads", "2026-11-02T00:00:00Z", "search"): (1, "0.03"),
        ("ads", "2026-11-03T00:00:00Z", None): (1, "0"),
        ("agents", "2026-11-03T00:00:00Z", "agent"): (3, "0.003"),
        ("agents", "2026-11-03T00:00:00Z", None): (1, "0.0001"),
        ("search", "2026-11-02T00:00:00Z", "search"): (1, "0.01"),
        ("search", "2026-11-02T00:00:00Z", "summarize"): (1, "0.0005"),
        ("search", "2026-11-03T00:00:00Z", "search"): (1, "0.000008"),
    }


@pytest.mark.parametrize(
    ("filters", "calls", "cost"),
    [
        ({"team": "search"}, 3, "0.010508"),
        ({"model": "gpt-4o"}, 5, "0.043"),
        ({"upstream": "azure"}, 1, "0.03"),
        ({"endpoint": "embeddings"}, 1, "0.000008"),
        ({"user": "alice"}, 2, "0.04"),
        ({"tags": ["feature:search"]}, 3, "0.040008"),
        ({"tags": ["feature:search", "env:prod"]}, 1, "0.03"),
        ({"team": "search", "model": "gpt-4o"}, 1, "0.01"),
        ({"team": "nobody"}, 0, "0"),
        ({"team": ""}, 9, "0.043608"),
    ],
)
async def test_filters_keep_only_the_matching_calls(
    ledger: AsyncEngine, filters: dict[str, Any], calls: int, cost: str
) -> None:
    summary = await report(ledger, usage=between(**filters))

    assert summary.totals.calls == calls
    assert summary.totals.model_dump(mode="json")["cost_usd"] == cost
    assert len(summary.groups) == (1 if calls else 0)


async def test_the_window_includes_since_and_excludes_until(ledger: AsyncEngine) -> None:
    r1, r2 = at(DAY1, 10, 15), at(DAY1, 10, 45)

    starting_at_r1 = await report(ledger, usage=between(r1, r2))
    ending_at_r1 = await report(ledger, usage=between(DAY1, r1))
    just_after_r1 = await report(ledger, usage=between(r1 + timedelta(microseconds=1), r2))

    assert starting_at_r1.totals.calls == 1
    assert starting_at_r1.totals.cost_usd == Decimal("0.01")
    assert ending_at_r1.totals.calls == 0
    assert just_after_r1.totals.calls == 0


async def test_a_window_given_with_an_offset_is_read_in_utc(ledger: AsyncEngine) -> None:
    paris = timezone(timedelta(hours=1))
    usage = usage_filter(
        window(
            datetime(2026, 11, 2, 11, 15, tzinfo=paris),
            datetime(2026, 11, 2, 12, tzinfo=paris),
            NOW,
        )
    )

    summary = await summarize(ledger, usage, ())

    assert usage.window.since == at(DAY1, 10, 15)
    assert summary.totals.calls == 2  # r1 and r2


async def test_the_default_window_is_the_last_thirty_days(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    await write(
        engine,
        [
            call("old", now - timedelta(days=30, minutes=1), "search", "gpt-4o", cost="1"),
            call("recent", now - timedelta(days=29, hours=23), "search", "gpt-4o", cost="2"),
        ],
    )

    summary = await summarize(engine, usage_filter(window(None, None, now)), ())

    assert summary.until == now and summary.since == now - timedelta(days=30)
    assert (summary.totals.calls, summary.totals.cost_usd) == (1, Decimal("2"))


async def test_day_buckets_are_utc_days_whatever_the_postgres_session_time_zone(
    postgres_database_url: str,
) -> None:
    await fill_ledger(postgres_database_url)
    engine = create_ledger_engine(postgres_database_url)
    try:
        async with engine.begin() as connection:
            name = connection.engine.url.database
            await connection.execute(
                text(f"ALTER DATABASE \"{name}\" SET timezone TO 'Pacific/Kiritimati'")
            )
        await engine.dispose()  # new connections take the database's time zone
        summary = await report(engine, "day")
    finally:
        await engine.dispose()

    assert figures(summary) == {
        ("2026-11-02T00:00:00Z",): (3, "0.0405"),
        ("2026-11-03T00:00:00Z",): (6, "0.003108"),
    }


async def test_the_hidden_prompt_share_counts_only_the_input_of_calls_with_a_split(
    ledger: AsyncEngine,
) -> None:
    summary = await report(ledger, usage=between(team="search"))

    # r1 and r2 have a split (500 hidden of 1500 input tokens); r5, an embedding, has none.
    assert summary.totals.prompt_system_tokens + summary.totals.prompt_tools_tokens == 500
    assert summary.totals.prompt_split_input_tokens == 1500
    assert summary.totals.input_tokens == 1900
    assert summary.totals.prompt_share == pytest.approx(500 / 1500, abs=1e-6)


async def test_the_prompt_share_is_null_without_any_input(engine: AsyncEngine) -> None:
    await write(engine, [call("e1", at(DAY1, 1), "search", "dall-e-3", endpoint="images")])

    summary = await report(engine)

    assert summary.totals.prompt_share is None


async def test_a_month_long_report_reads_the_rollup_not_the_records(ledger: AsyncEngine) -> None:
    from_records = await report(ledger, "team,model")
    async with ledger.begin() as connection:
        await connection.execute(delete(UsageRow))

    summary = await report(ledger, "team,model", between(DAY1, MONTH_UNTIL))
    day2_calls = await report(ledger, "team,model", between(DAY2, MONTH_UNTIL))

    assert summary.source == "rollup"
    assert summary.totals.calls == 9
    assert summary.totals.cost_usd == Decimal("0.043608")
    assert day2_calls.totals.calls == 6
    # The rollup gives the same figures as the records, except the split input it does not keep.
    for group in from_records.groups:
        (same,) = [found for found in summary.groups if found.group == group.group]
        ignored = {"prompt_split_input_tokens", "prompt_share"}
        assert same.model_dump(exclude=ignored) == group.model_dump(exclude=ignored)
        assert same.prompt_split_input_tokens is None


async def test_the_rollup_groups_by_day_and_hour_and_filters_by_team_model_and_upstream(
    ledger: AsyncEngine,
) -> None:
    month = between(DAY1, MONTH_UNTIL, team="search", upstream="openai")

    by_day = await report(ledger, "day,model", month)

    assert by_day.source == "rollup"
    assert figures(by_day) == {
        ("2026-11-02T00:00:00Z", "gpt-4o"): (1, "0.01"),
        ("2026-11-02T00:00:00Z", "gpt-4o-mini"): (1, "0.0005"),
        ("2026-11-03T00:00:00Z", "text-embedding-3-small"): (1, "0.000008"),
    }
    by_hour = await report(ledger, "hour", between(DAY1, MONTH_UNTIL, model="gpt-4o"))
    assert by_hour.source == "rollup"
    assert figures(by_hour) == {
        ("2026-11-02T10:00:00Z",): (1, "0.01"),
        ("2026-11-02T11:00:00Z",): (1, "0.03"),
        ("2026-11-03T12:00:00Z",): (3, "0.003"),
    }


async def test_the_rollup_gives_the_prompt_share_over_all_input_tokens(
    ledger: AsyncEngine,
) -> None:
    summary = await report(ledger, usage=between(DAY1, MONTH_UNTIL, team="search"))

    assert summary.source == "rollup"
    assert summary.totals.prompt_split_input_tokens is None
    assert summary.totals.prompt_share == pytest.approx(500 / 1900, abs=1e-6)


@pytest.mark.parametrize(
    ("dimensions", "filters"),
    [
        ("user", {}),
        ("endpoint", {}),
        ("tag:feature", {}),
        ("", {"user": "alice"}),
        ("", {"endpoint": "chat"}),
        ("", {"tags": ["feature:search"]}),
    ],
)
async def test_a_long_report_the_rollup_cannot_answer_reads_the_records(
    ledger: AsyncEngine, dimensions: str, filters: dict[str, Any]
) -> None:
    summary = await report(ledger, dimensions, between(DAY1, MONTH_UNTIL, **filters))

    assert summary.source == "records"


async def test_a_two_day_report_reads_the_records(ledger: AsyncEngine) -> None:
    assert (await report(ledger, "team")).source == "records"


async def test_a_long_window_reads_its_partial_edge_hours_from_the_records(
    ledger: AsyncEngine,
) -> None:
    # From 10:30: r1 (10:15) is out, r2 (10:45) is in; the whole hours come from the rollup.
    since = at(DAY1, 10, 30)
    async with ledger.begin() as connection:
        await connection.execute(delete(UsageRow).where(UsageRow.request_id == "r5"))

    summary = await report(ledger, "team", between(since, since + timedelta(days=30)))

    assert summary.source == "rollup"
    assert figures(summary) == {
        ("ads",): (2, "0.03"),
        ("agents",): (4, "0.0031"),
        # r2 from the records at the edge, r5 (its row deleted) from the rollup's whole hours.
        ("search",): (2, "0.000508"),
    }


async def test_an_edge_hour_at_the_end_of_a_long_window_comes_from_the_records(
    ledger: AsyncEngine,
) -> None:
    until = at(DAY2, 12, 1) + timedelta(
        seconds=30
    )  # t1 and t2 of hour 12 are in, t3 (12:02) is out
    since = until - timedelta(days=3)

    summary = await report(ledger, "team", between(since, until, team="agents"))

    assert summary.source == "rollup"
    assert figures(summary) == {("agents",): (2, "0.003")}


async def test_pages_of_records_cover_every_call_once_newest_first(engine: AsyncEngine) -> None:
    # Groups of three calls share a time, so the order falls back to the request id.
    records = [
        call(f"p{number:02d}", at(DAY1, number // 3), "search", "gpt-4o", cost="0.01")
        for number in range(25)
    ]
    await write(engine, records)
    seen: list[str] = []
    cursor = None
    pages = 0

    while True:
        page = await list_records(engine, between(), 7, cursor)
        seen += [record.request_id for record in page.data]
        pages += 1
        if not page.has_more:
            assert page.next_cursor is None
            break
        cursor = page.next_cursor

    expected = sorted(records, key=lambda record: (record.created_at, record.request_id))
    assert seen == [record.request_id for record in reversed(expected)]
    assert pages == 4


async def test_a_page_of_records_has_every_field_of_a_call(ledger: AsyncEngine) -> None:
    page = await list_records(ledger, between(user="alice"), 10)

    assert [record.request_id for record in page.data] == ["r3", "r1"]
    assert page.model_dump(mode="json")["data"][0] == {
        "request_id": "r3",
        "created_at": "2026-11-02T11:05:00Z",
        "team": "ads",
        "key_id": None,
        "user": "alice",
        "tags": {"feature": "search", "env": "prod"},
        "trace_id": None,
        "parent_id": None,
        "upstream": "azure",
        "model": "gpt-4o",
        "endpoint": "responses",
        "status": "200",
        "input_tokens": 2000,
        "cached_input_tokens": 1000,
        "audio_input_tokens": 0,
        "output_tokens": 300,
        "reasoning_tokens": 100,
        "audio_output_tokens": 0,
        "images": 0,
        "prompt_system_tokens": 500,
        "prompt_tools_tokens": 500,
        "prompt_history_tokens": 0,
        "prompt_latest_tokens": 1000,
        "cost_usd": "0.03",
        "price_entry": "config:gpt-4o",
        "estimated": False,
        "service_tier": None,
        "batch": False,
        "latency_seconds": 0.5,
        "time_to_first_token_seconds": None,
    }
    assert (page.has_more, page.next_cursor) == (False, None)


async def test_an_unpriced_record_has_a_null_cost(ledger: AsyncEngine) -> None:
    page = await list_records(ledger, between(model="llama-3"), 10)

    assert page.model_dump(mode="json")["data"][0]["cost_usd"] is None


def test_a_cursor_names_a_position_exactly() -> None:
    position = (datetime(2026, 11, 2, 10, 15, 0, 123456, tzinfo=UTC), "req-1")

    assert decode_cursor(encode_cursor(position)) == position


def token(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    ["", "garbage!", "é", token(b"[]"), token(b'["x", "y"]'), token(b"[1, 2]"),
     token(b'["2026-11-02T10:00:00+00:00", "a\\u0000b"]'), token(b'{"a": 1}')],
)  # fmt: skip
def test_a_cursor_this_api_did_not_give_is_refused(cursor: str) -> None:
    with pytest.raises(ReportError) as refused:
        decode_cursor(cursor)

    assert refused.value.param == "cursor"


async def test_a_trace_is_its_calls_as_a_tree_with_their_costs(ledger: AsyncEngine) -> None:
    tree = await trace_tree(ledger, "trace-1")

    assert tree is not None
    document = tree.model_dump(mode="json")
    assert {key: value for key, value in document.items() if key != "roots"} == {
        "trace_id": "trace-1",
        "team": "agents",
        "started_at": "2026-11-03T12:00:00Z",
        "last_call_at": "2026-11-03T12:02:00Z",
        "calls": 3,
        "background_calls": 2,
        "unpriced_calls": 1,
        "input_tokens": 600,
        "output_tokens": 60,
        "cost_usd": "0.003",
    }
    (root,) = document["roots"]
    (child,) = root["children"]
    (grandchild,) = child["children"]
    assert (root["request_id"], root["parent_id"], root["cost_usd"]) == ("t1", None, "0.001")
    assert (child["request_id"], child["parent_id"], child["cost_usd"]) == ("t2", "t1", "0.002")
    assert grandchild == {
        "request_id": "t3",
        "parent_id": "t2",
        "created_at": "2026-11-03T12:02:00Z",
        "model": "gpt-4o",
        "endpoint": "chat",
        "status": "200",
        "input_tokens": 300,
        "cached_input_tokens": 100,
        "output_tokens": 30,
        "reasoning_tokens": 10,
        "cost_usd": None,
        "children": [],
    }


async def test_calls_whose_parent_is_not_in_the_trace_or_which_form_a_loop_are_roots(
    engine: AsyncEngine,
) -> None:
    def traced(request_id: str, minute: int, parent_id: str) -> UsageRecord:
        return call(
            request_id, at(DAY1, 9, minute), "agents", "gpt-4o", cost="0.01",
            trace_id="loops", parent_id=parent_id,
        )  # fmt: skip

    # a's parent is a W3C span, not a call; b and c name each other; d names itself.
    await write(
        engine, [traced("a", 0, "00f067aa0ba902b7"), traced("b", 1, "c"), traced("c", 2, "b"),
                 traced("d", 3, "d"), traced("e", 4, "a")],
    )  # fmt: skip

    tree = await trace_tree(engine, "loops")

    assert tree is not None
    shape = {root.request_id: [child.request_id for child in root.children] for root in tree.roots}
    assert shape == {"a": ["e"], "b": ["c"], "d": []}
    assert (tree.calls, tree.background_calls, tree.cost_usd) == (5, 4, Decimal("0.05"))


async def test_an_unknown_trace_has_no_tree(ledger: AsyncEngine) -> None:
    assert await trace_tree(ledger, "no-such-trace") is None


# Clients choose trace ids: a call of `search` carries `agents`'s `trace-1` too.
SEARCH_IN_TRACE_1 = call(
    "s1", at(DAY2, 12, 5), "search", "gpt-4o", cost="0.5", trace_id="trace-1", parent_id="t1"
)


async def test_a_trace_tree_is_one_teams_calls_of_the_trace_id(ledger: AsyncEngine) -> None:
    await write(ledger, [SEARCH_IN_TRACE_1])

    tree = await trace_tree(ledger, "trace-1", "search")

    assert tree is not None
    assert (tree.team, tree.calls, tree.cost_usd) == ("search", 1, Decimal("0.5"))
    # Its parent is another team's call: not in this trace, so it is a root.
    assert [root.request_id for root in tree.roots] == ["s1"]


async def test_a_trace_id_of_several_teams_needs_a_team_for_its_tree(ledger: AsyncEngine) -> None:
    await write(ledger, [SEARCH_IN_TRACE_1])

    with pytest.raises(TraceOfSeveralTeams) as refused:
        await trace_tree(ledger, "trace-1")

    assert refused.value.param == "team"


async def test_a_trace_id_of_two_teams_is_two_top_traces_each_of_its_teams_calls(
    ledger: AsyncEngine,
) -> None:
    await write(ledger, [SEARCH_IN_TRACE_1])

    top = await top_traces(ledger, window(SINCE, UNTIL, NOW), None, 10)
    top_search = await top_traces(ledger, window(SINCE, UNTIL, NOW), "search", 10)

    assert [(t.trace_id, t.team, t.calls, t.cost_usd) for t in top.data] == [
        ("trace-1", "search", 1, Decimal("0.5")),
        ("trace-1", "agents", 3, Decimal("0.003")),
        ("trace-2", "agents", 1, Decimal("0.0001")),
    ]
    assert [(t.trace_id, t.calls) for t in top_search.data] == [("trace-1", 1)]


async def test_top_traces_are_the_most_expensive_with_a_call_in_the_window(
    ledger: AsyncEngine,
) -> None:
    await write(
        ledger,
        [
            call("x1", at(DAY1, 8), "ads", "gpt-4o", cost="0.5", trace_id="trace-3"),
            call("x2", at(DAY2, 20), "ads", "gpt-4o", cost="0.25", trace_id="trace-3"),
            call("old", DAY1 - timedelta(days=3), "ads", "gpt-4o", cost="9", trace_id="trace-0"),
        ],
    )

    top = await top_traces(ledger, window(SINCE, UNTIL, NOW), None, 10)
    top_ads = await top_traces(ledger, window(SINCE, UNTIL, NOW), "ads", 10)
    top_one = await top_traces(ledger, window(SINCE, UNTIL, NOW), None, 1)
    late = await top_traces(ledger, window(at(DAY2, 14), UNTIL, NOW), None, 10)

    assert [(t.trace_id, t.cost_usd, t.calls) for t in top.data] == [
        ("trace-3", Decimal("0.75"), 2),
        ("trace-1", Decimal("0.003"), 3),
        ("trace-2", Decimal("0.0001"), 1),
    ]
    first = top.model_dump(mode="json")["data"][1]
    assert first == {
        "trace_id": "trace-1",
        "team": "agents",
        "started_at": "2026-11-03T12:00:00Z",
        "last_call_at": "2026-11-03T12:02:00Z",
        "calls": 3,
        "background_calls": 2,
        "unpriced_calls": 1,
        "input_tokens": 600,
        "output_tokens": 60,
        "cost_usd": "0.003",
    }
    assert [t.trace_id for t in top_ads.data] == ["trace-3"]
    assert [t.trace_id for t in top_one.data] == ["trace-3"]
    # A trace counts while it spans the window: trace-3 runs from day 1 08:00 to day 2 20:00.
    assert [t.trace_id for t in late.data] == ["trace-3"]


@pytest.mark.parametrize(
    "text",
    ["color", "team,team", "tag:", "tag:bad key", "team,,model", "tag:a,tag:b,tag:c,tag:d,"
     "tag:e,tag:f,tag:g,tag:h,tag:i"],
)  # fmt: skip
def test_an_unknown_or_repeated_grouping_is_refused(text: str) -> None:
    with pytest.raises(ReportError) as refused:
        group_by(text)

    assert refused.value.param == "group_by"
    assert refused.value.status == 400


def test_groupings_are_parsed_in_order() -> None:
    assert [d.label for d in group_by(" team , tag:feature,hour")] == [
        "team",
        "tag:feature",
        "hour",
    ]


@pytest.mark.parametrize(
    ("filters", "param"),
    [
        ({"team": "a\x00b"}, "team"),
        ({"model": "m" * 257}, "model"),
        ({"user": "\ud800"}, "user"),
        ({"tags": ["no-colon"]}, "tag"),
        ({"tags": ["bad key:v"]}, "tag"),
        ({"tags": ["k:\x00"]}, "tag"),
        ({"tags": [f"k{n}:v" for n in range(17)]}, "tag"),
    ],
)
def test_a_filter_the_database_cannot_compare_is_refused(
    filters: dict[str, Any], param: str
) -> None:
    with pytest.raises(ReportError) as refused:
        between(**filters)

    assert refused.value.param == param


@pytest.mark.parametrize(
    ("since", "until", "param"),
    [
        (UNTIL, SINCE, "since"),
        (SINCE, SINCE, "since"),
        (None, datetime(1, 1, 5, tzinfo=UTC), "until"),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), None, "since"),
    ],
)
def test_a_window_that_ends_before_it_starts_or_out_of_range_is_refused(
    since: datetime | None, until: datetime | None, param: str
) -> None:
    with pytest.raises(ReportError) as refused:
        window(since, until, NOW)

    assert refused.value.param == param


def test_naive_times_are_utc() -> None:
    span = window(datetime(2026, 11, 2, 10), datetime(2026, 11, 3), NOW)

    assert span.since == datetime(2026, 11, 2, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("24h", NOW - timedelta(hours=24)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2w", NOW - timedelta(weeks=2)),
        ("2026-11-02T10:00:00Z", datetime(2026, 11, 2, 10, tzinfo=UTC)),
        ("2026-11-02", datetime(2026, 11, 2)),
        (None, None),
    ],
)
def test_a_time_is_iso_8601_or_a_time_ago(text: str | None, expected: datetime | None) -> None:
    assert instant(text, NOW, "since") == expected


@pytest.mark.parametrize("text", ["yesterday", "7 days", "-7d", "999999w"])
def test_a_time_that_is_neither_is_refused(text: str) -> None:
    with pytest.raises(ReportError) as refused:
        instant(text, NOW, "since")

    assert refused.value.param == "since"
