"""The report documents: what `/usage/*` answers and `metering-proxy report --format json` prints.

Money is a `Decimal` inside and an exact decimal string in JSON.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field, PlainSerializer


def usd_text(value: Decimal) -> str:
    """An amount as JSON carries it: exact, fixed-point, without trailing zeros."""
    return format(value.normalize(), "f")


Usd = Annotated[Decimal, PlainSerializer(usd_text, return_type=str, when_used="json")]


class UsageTotals(BaseModel):
    """Calls, tokens and cost of a set of calls."""

    calls: int
    unpriced_calls: int = Field(description="Calls with no known price: not in `cost_usd`.")
    input_tokens: int = Field(description="Includes `cached_input_tokens`.")
    cached_input_tokens: int
    output_tokens: int = Field(description="Includes `reasoning_tokens`.")
    reasoning_tokens: int
    cost_usd: Usd = Field(description="USD, a decimal string; priced calls only.")
    prompt_system_tokens: int = Field(description="Input tokens of system instructions.")
    prompt_tools_tokens: int = Field(description="Input tokens of tool definitions.")
    prompt_split_input_tokens: int | None = Field(
        description="Input tokens of the calls whose prompt was split by origin: the "
        "denominator of `prompt_share`. Null when read from the hourly rollup, which does not "
        "keep it; `prompt_share` is then over all input tokens (a lower bound)."
    )
    prompt_share: float | None = Field(
        description="The hidden prompt's share of the input: (system + tools) / input tokens. "
        "Null when no input tokens count."
    )


class UsageGroup(UsageTotals):
    """One group of a summary."""

    group: dict[str, str | None] = Field(
        description="The group's value of each `group_by` dimension; day and hour as ISO 8601 "
        "UTC times; null for calls without a user or without the tag."
    )


class Summary(BaseModel):
    """Usage grouped by the asked dimensions over a window, with its totals."""

    source: Literal["records", "rollup"] = Field(
        description="`rollup`: whole hours were read from the hourly rollup (the partial hours "
        "at the window's edges from the records); `records`: every call was read."
    )
    since: datetime
    until: datetime
    group_by: list[str]
    groups: list[UsageGroup]
    totals: UsageTotals


class UsageRecordDocument(BaseModel):
    """One call as the ledger keeps it."""

    request_id: str
    created_at: datetime
    team: str
    key_id: str | None
    user: str | None
    tags: dict[str, str]
    trace_id: str | None
    parent_id: str | None
    upstream: str
    model: str
    endpoint: str
    status: str
    input_tokens: int
    cached_input_tokens: int
    audio_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    audio_output_tokens: int
    images: int
    prompt_system_tokens: int | None
    prompt_tools_tokens: int | None
    prompt_history_tokens: int | None
    prompt_latest_tokens: int | None
    cost_usd: Usd | None = Field(description="USD, a decimal string; null when unpriced.")
    price_entry: str | None
    estimated: bool
    service_tier: str | None
    batch: bool
    latency_seconds: float
    time_to_first_token_seconds: float | None


class RequestPage(BaseModel):
    """A page of records, newest first."""

    data: list[UsageRecordDocument]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class TraceCall(BaseModel):
    """One call of a trace, with the calls it caused."""

    request_id: str
    parent_id: str | None
    created_at: datetime
    model: str
    endpoint: str
    status: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_usd: Usd | None = Field(description="USD, a decimal string; null when unpriced.")
    children: list[TraceCall]


class TraceTotals(BaseModel):
    """A trace's calls, tokens and cost."""

    trace_id: str
    team: str
    started_at: datetime
    last_call_at: datetime
    calls: int
    background_calls: int = Field(description="Every call after the root.")
    unpriced_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: Usd = Field(description="USD, a decimal string; priced calls only.")


class TraceTree(TraceTotals):
    """A trace's calls as a tree: `roots` are the calls whose parent is not in the trace."""

    roots: list[TraceCall]


class TopTraces(BaseModel):
    """The most expensive traces active in a window, most expensive first."""

    since: datetime
    until: datetime
    data: list[TraceTotals]
