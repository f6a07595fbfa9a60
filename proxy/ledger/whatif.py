"""What-if repricing: what the same usage would have cost on another model, through the Batch
API, or with its system prompt and tools served from the prompt cache.

It reads the hourly rollup (fast over months: whole hours that start in the window) and prices
each hour's tokens with the same
catalog as live metering, at that hour's prices. Limits, by construction: a rollup row sums many
calls, so per-call price tiers (a long-context surcharge) are applied to the sum; and rows that
used no tokens (DALL-E images, audio by the second) cannot be repriced and keep their actual cost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from proxy.ledger.models import HourlyUsageRow
from proxy.ledger.reports.documents import usd_text
from proxy.ledger.reports.filters import Dimension, ReportError, UsageFilter
from proxy.metering.usage import Usage
from proxy.pricing.catalog import PriceCatalog
from proxy.settings import OPENAI_BASE_URL, UpstreamConfig

GROUPINGS = ("team", "model", "upstream", "day")
_ROWS_PER_READ = 1000  # tens of milliseconds of loading and pricing


@dataclass(frozen=True, slots=True)
class Scenario:
    model: str | None = None  # reprice on this model instead of the one used
    batch: bool = False  # through the Batch API
    cache_prompt: bool = False  # system prompt and tool definitions read from the prompt cache


@dataclass(slots=True)
class WhatIfGroup:
    key: dict[str, str]
    calls: int = 0
    actual_cost_usd: Decimal = Decimal(0)
    scenario_cost_usd: Decimal = Decimal(0)
    # Calls whose actual or scenario price is unknown: their cost is in neither sum.
    unpriced_calls: int = 0
    kept_at_actual_calls: int = 0  # calls with no tokens to reprice

    @property
    def saving_usd(self) -> Decimal:
        return self.actual_cost_usd - self.scenario_cost_usd


@dataclass(frozen=True, slots=True)
class WhatIfReport:
    scenario: Scenario
    usage: UsageFilter
    groups: list[WhatIfGroup] = field(default_factory=list)

    @property
    def total(self) -> WhatIfGroup:
        total = WhatIfGroup(key={})
        for group in self.groups:
            total.calls += group.calls
            total.actual_cost_usd += group.actual_cost_usd
            total.scenario_cost_usd += group.scenario_cost_usd
            total.unpriced_calls += group.unpriced_calls
            total.kept_at_actual_calls += group.kept_at_actual_calls
        return total


def _usage_of(row: HourlyUsageRow, cache_prompt: bool) -> Usage:
    cached = row.cached_input_tokens
    if cache_prompt:
        # Prompt caching caches the prefix: instructions and tools come first in every call.
        cached = min(
            row.input_tokens, max(cached, row.prompt_system_tokens + row.prompt_tools_tokens)
        )
    return Usage(
        input_tokens=row.input_tokens,
        cached_input_tokens=cached,
        audio_input_tokens=row.audio_input_tokens,
        output_tokens=row.output_tokens,
        reasoning_tokens=row.reasoning_tokens,
        audio_output_tokens=row.audio_output_tokens,
    )


def _group_key(row: HourlyUsageRow, group_by: Sequence[str]) -> dict[str, str]:
    values = {
        "team": row.team,
        "model": row.model,
        "upstream": row.upstream,
        "day": row.hour.date().isoformat(),
    }
    return {name: values[name] for name in group_by}


class WhatIf:
    """Reprices a window of the ledger under a scenario."""

    def __init__(
        self,
        engine: AsyncEngine,
        catalog: PriceCatalog,
        upstreams: Mapping[str, UpstreamConfig],
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._upstreams = upstreams

    async def report(
        self, scenario: Scenario, usage: UsageFilter, group_by: Sequence[Dimension]
    ) -> WhatIfReport:
        """`ReportError` for a grouping or filter the hourly rollup cannot answer."""
        names = [dimension.label for dimension in group_by]
        unknown = [name for name in names if name not in GROUPINGS]
        if unknown:
            raise ReportError(
                f"What-if groups only by {', '.join(GROUPINGS)}, not {', '.join(unknown)}.",
                param="group_by",
            )
        if usage.endpoint or usage.user or usage.tags:
            raise ReportError(
                "What-if reads the hourly rollup: filter by team, model or upstream only.",
                param="endpoint" if usage.endpoint else "user" if usage.user else "tag",
            )
        groups: dict[tuple[str, ...], WhatIfGroup] = {}
        async for rows in self._rows(usage):
            for row in rows:
                key = _group_key(row, names)
                group = groups.setdefault(tuple(key.values()), WhatIfGroup(key=key))
                self._add(group, row, scenario)
        ordered = sorted(groups.values(), key=lambda g: g.actual_cost_usd, reverse=True)
        return WhatIfReport(scenario, usage, ordered)

    async def _rows(self, usage: UsageFilter) -> AsyncIterator[Sequence[HourlyUsageRow]]:
        """The rows, read and priced a few at a time: loading and pricing are pure Python, and
        each read lets a report that was cancelled (its caller left, its deadline passed) stop,
        and reports running beside it take their turn."""
        # Whole hours that start in the window: the rollup has no finer grain.
        query = select(HourlyUsageRow).where(
            HourlyUsageRow.hour >= usage.window.since,
            HourlyUsageRow.hour < usage.window.until,
        )
        for column, value in (
            (HourlyUsageRow.team, usage.team),
            (HourlyUsageRow.model, usage.model),
            (HourlyUsageRow.upstream, usage.upstream),
        ):
            if value is not None:
                query = query.where(column == value)
        query = query.execution_options(yield_per=_ROWS_PER_READ)
        async with AsyncSession(self._engine) as session:
            async for rows in (await session.stream_scalars(query)).partitions():
                yield rows

    def _add(self, group: WhatIfGroup, row: HourlyUsageRow, scenario: Scenario) -> None:
        group.calls += row.calls
        usage = _usage_of(row, scenario.cache_prompt)
        if usage.input_tokens == 0 and usage.output_tokens == 0:
            group.kept_at_actual_calls += row.calls
            group.unpriced_calls += row.unpriced_calls
            group.actual_cost_usd += row.cost_usd
            group.scenario_cost_usd += row.cost_usd
            return
        upstream = self._upstreams.get(row.upstream)
        price = self._catalog.price(
            usage,
            model=scenario.model or row.model,
            upstream_kind=upstream.kind if upstream else "openai",
            upstream_base_url=upstream.base_url if upstream else OPENAI_BASE_URL,
            at=row.hour if row.hour.tzinfo else row.hour.replace(tzinfo=UTC),
            batch=scenario.batch,
        )
        if price is None or row.unpriced_calls:
            # A known cost beside an unknown one would mislead: the hour counts as unpriced.
            group.unpriced_calls += row.calls
            return
        group.actual_cost_usd += row.cost_usd
        group.scenario_cost_usd += price.cost_usd


class ScenarioDocument(BaseModel):
    model: str | None
    batch: bool
    cache_prompt: bool


class WhatIfGroupDocument(BaseModel):
    key: dict[str, str]
    calls: int
    unpriced_calls: int
    kept_at_actual_calls: int
    actual_cost_usd: str
    scenario_cost_usd: str
    saving_usd: str


class WhatIfDocument(BaseModel):
    """A what-if report: amounts are decimal strings, exact."""

    scenario: ScenarioDocument
    since: datetime
    until: datetime
    groups: list[WhatIfGroupDocument]
    totals: WhatIfGroupDocument


def _group_document(group: WhatIfGroup) -> WhatIfGroupDocument:
    return WhatIfGroupDocument(
        key=group.key,
        calls=group.calls,
        unpriced_calls=group.unpriced_calls,
        kept_at_actual_calls=group.kept_at_actual_calls,
        actual_cost_usd=usd_text(group.actual_cost_usd),
        scenario_cost_usd=usd_text(group.scenario_cost_usd),
        saving_usd=usd_text(group.saving_usd),
    )


def what_if_document(report: WhatIfReport) -> WhatIfDocument:
    scenario = report.scenario
    return WhatIfDocument(
        scenario=ScenarioDocument(
            model=scenario.model, batch=scenario.batch, cache_prompt=scenario.cache_prompt
        ),
        since=report.usage.window.since,
        until=report.usage.window.until,
        groups=[_group_document(group) for group in report.groups],
        totals=_group_document(report.total),
    )
