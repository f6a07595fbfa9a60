"""Writing batches of rows to the database: idempotent by request id, rollups in the same commit.

Only the rows a batch really inserted (`RETURNING` on an insert that skips known request ids)
are added to the hourly rollup, the traces and the budgets' spend, so replaying a batch never
counts it twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table, case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy.ledger.models import BudgetSpendRow, HourlyUsageRow, TraceRow, UsageRow
from proxy.ledger.rows import Row
from proxy.ledger.spend import SpendKey, spend_key

_ROLLUP_SUMS = (
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
    "images",
    "prompt_system_tokens",
    "prompt_tools_tokens",
)


@dataclass(slots=True)
class _Totals:
    calls: int = 0
    unpriced_calls: int = 0
    cost_usd: Decimal = Decimal(0)
    sums: dict[str, int] = field(default_factory=dict)
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add(self, row: Row, sums: Sequence[str]) -> None:
        self.calls += 1
        if row["cost_usd"] is None:
            self.unpriced_calls += 1
        else:
            self.cost_usd += row["cost_usd"]
        for column in sums:
            self.sums[column] = self.sums.get(column, 0) + (row.get(column) or 0)
        at = row["created_at"]
        self.first_at = at if self.first_at is None else min(self.first_at, at)
        self.last_at = at if self.last_at is None else max(self.last_at, at)


class LedgerStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert

    async def write(self, rows: Sequence[Row]) -> int:
        """Store the rows in one transaction; return how many were new."""
        async with self._engine.begin() as connection:
            inserted = await self._insert_new(connection, rows)
            if inserted:
                await self._add_to_rollup(connection, inserted)
                await self._add_to_traces(connection, inserted)
                await self._add_to_spend(connection, inserted)
        return len(inserted)

    async def _insert_new(self, connection: AsyncConnection, rows: Sequence[Row]) -> list[Row]:
        table: Table = UsageRow.__table__  # type: ignore[assignment]
        statement = (
            self._insert(table)
            .on_conflict_do_nothing(index_elements=["request_id"])
            .returning(table.c.request_id)
        )
        result = await connection.execute(statement, list(rows))
        new_ids = set(result.scalars().all())
        return [row for row in rows if row["request_id"] in new_ids]

    async def _add_to_rollup(self, connection: AsyncConnection, rows: Sequence[Row]) -> None:
        totals: dict[tuple[Any, ...], _Totals] = {}
        for row in rows:
            hour = row["created_at"].replace(minute=0, second=0, microsecond=0)
            key = (hour, row["team"], row["model"], row["upstream"])
            totals.setdefault(key, _Totals()).add(row, _ROLLUP_SUMS)
        table: Table = HourlyUsageRow.__table__  # type: ignore[assignment]
        values = [
            {
                "hour": hour,
                "team": team,
                "model": model,
                "upstream": upstream,
                "calls": total.calls,
                "unpriced_calls": total.unpriced_calls,
                "cost_usd": total.cost_usd,
                **{column: total.sums[column] for column in _ROLLUP_SUMS},
            }
            for (hour, team, model, upstream), total in totals.items()
        ]
        added = ("calls", "unpriced_calls", "cost_usd", *_ROLLUP_SUMS)
        statement = self._adding_upsert(table, ["hour", "team", "model", "upstream"], added)
        await connection.execute(statement, values)

    async def _add_to_spend(self, connection: AsyncConnection, rows: Sequence[Row]) -> None:
        """The budgets' rollup (see proxy/ledger/spend.py)."""
        totals: dict[SpendKey, _Totals] = {}
        for row in rows:
            key = spend_key(row["team"], row["key_id"], row["created_at"])
            totals.setdefault(key, _Totals()).add(row, ())
        table: Table = BudgetSpendRow.__table__  # type: ignore[assignment]
        values = [
            {
                "team": team,
                "key_id": key_id,
                "bucket_start": bucket,
                "calls": total.calls,
                "unpriced_calls": total.unpriced_calls,
                "cost_usd": total.cost_usd,
            }
            for (team, key_id, bucket), total in totals.items()
        ]
        statement = self._adding_upsert(
            table, ["team", "key_id", "bucket_start"], ("calls", "unpriced_calls", "cost_usd")
        )
        await connection.execute(statement, values)

    def _adding_upsert(self, table: Table, key_columns: list[str], added: Sequence[str]) -> Any:
        """An insert that, for a key already there, adds the new values to the stored ones."""
        statement = self._insert(table)
        return statement.on_conflict_do_update(
            index_elements=key_columns,
            set_={column: table.c[column] + statement.excluded[column] for column in added},
        )

    async def _add_to_traces(self, connection: AsyncConnection, rows: Sequence[Row]) -> None:
        totals: dict[str, _Totals] = {}
        teams: dict[str, str] = {}
        for row in rows:
            if row["trace_id"] is not None:
                teams.setdefault(row["trace_id"], row["team"])
                total = totals.setdefault(row["trace_id"], _Totals())
                total.add(row, ("input_tokens", "output_tokens"))
        if not totals:
            return
        table: Table = TraceRow.__table__  # type: ignore[assignment]
        values = [
            {
                "trace_id": trace_id,
                "team": teams[trace_id],
                "started_at": total.first_at,
                "last_call_at": total.last_at,
                "calls": total.calls,
                "unpriced_calls": total.unpriced_calls,
                "cost_usd": total.cost_usd,
                "input_tokens": total.sums["input_tokens"],
                "output_tokens": total.sums["output_tokens"],
            }
            for trace_id, total in totals.items()
        ]
        statement = self._insert(table)
        excluded = statement.excluded
        added = ("calls", "unpriced_calls", "cost_usd", "input_tokens", "output_tokens")
        set_: dict[str, Any] = {column: table.c[column] + excluded[column] for column in added}
        set_["started_at"] = case(
            (excluded.started_at < table.c.started_at, excluded.started_at),
            else_=table.c.started_at,
        )
        set_["last_call_at"] = case(
            (excluded.last_call_at > table.c.last_call_at, excluded.last_call_at),
            else_=table.c.last_call_at,
        )
        statement = statement.on_conflict_do_update(index_elements=["trace_id"], set_=set_)
        await connection.execute(statement, values)
