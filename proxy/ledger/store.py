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
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from proxy.ledger.models import BudgetSpendRow, HourlyUsageRow, TraceRow, UsageRow
from proxy.ledger.postgres_batch import batch_parameters, batch_statement
from proxy.ledger.rows import Row, decode, encode
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


# What every rollup counts, and what the traces sum besides.
_COUNTED = ("calls", "unpriced_calls", "cost_usd")
_TRACE_SUMS = ("input_tokens", "output_tokens")


def hour_of(at: datetime) -> datetime:
    """The hour of the hourly rollup that `at` falls in."""
    return at.replace(minute=0, second=0, microsecond=0)


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


class RejectedBatch(Exception):
    """The database refused a batch's data, not its connection: it would fail the same way at
    every retry (a value out of a column's range, a line that is not a record)."""


def _refused_data(error: Exception) -> bool:
    """Postgres's data exceptions (SQLSTATE class 22, e.g. a numeric field overflow), SQLite's
    driver refusing an integer past 64 bits, `decode` refusing a line that is not a record."""
    if isinstance(error, DBAPIError):
        return str(getattr(error.orig, "sqlstate", "")).startswith("22")
    return isinstance(error, OverflowError | ValueError)


class LedgerStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert = dialect.insert
        # Postgres takes a batch in one statement (see postgres_batch); the portable path
        # below serves SQLite. Its statements are built once: building them cost more than
        # running them.
        self._postgres_batch = (
            batch_statement(_COUNTED, _ROLLUP_SUMS, _TRACE_SUMS)
            if engine.dialect.name == "postgresql"
            else None
        )
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._insert_rows = self._new_rows_insert()
        self._rollup_upsert = self._adding_upsert(
            HourlyUsageRow.__table__,  # type: ignore[arg-type]
            ["hour", "team", "model", "upstream"],
            (*_COUNTED, *_ROLLUP_SUMS),
        )
        self._spend_upsert = self._adding_upsert(
            BudgetSpendRow.__table__,  # type: ignore[arg-type]
            ["team", "key_id", "bucket_start"],
            _COUNTED,
        )
        self._traces_upsert = self._trace_upsert()

    async def write(self, rows: Sequence[Row]) -> int:
        """Store the rows in one transaction; return how many were new."""
        return await self.write_lines([encode(row) for row in rows])

    async def write_lines(self, lines: Sequence[bytes]) -> int:
        """Store whole journal lines (as `encode` wrote them) in one transaction; return how
        many were new. `RejectedBatch` if the database refused their data."""
        try:
            if self._postgres_batch is not None:
                return await self._write_postgres(lines)
            return await self._write_portable([decode(line) for line in lines])
        except Exception as error:
            if _refused_data(error):
                raise RejectedBatch(str(error.__cause__ or error)) from error
            raise

    async def _write_postgres(self, lines: Sequence[bytes]) -> int:
        assert self._postgres_batch is not None
        # One statement is atomic by itself: no BEGIN and COMMIT round trips.
        async with self._autocommit.connect() as connection:
            result = await connection.execute(self._postgres_batch, batch_parameters(lines))
            inserted: int = result.scalar_one()
            return inserted

    async def _write_portable(self, rows: Sequence[Row]) -> int:
        async with self._engine.begin() as connection:
            inserted = await self._insert_new(connection, rows)
            if inserted:
                await self._add_to_rollup(connection, inserted)
                await self._add_to_traces(connection, inserted)
                await self._add_to_spend(connection, inserted)
        return len(inserted)

    def _new_rows_insert(self) -> Any:
        table: Table = UsageRow.__table__  # type: ignore[assignment]
        return (
            self._insert(table)
            .on_conflict_do_nothing(index_elements=["request_id"])
            .returning(table.c.request_id)
        )

    async def _insert_new(self, connection: AsyncConnection, rows: Sequence[Row]) -> list[Row]:
        # A call journaled twice in one batch is one call.
        unique = list({row["request_id"]: row for row in reversed(rows)}.values())[::-1]
        result = await connection.execute(self._insert_rows, unique)
        new_ids = set(result.scalars().all())
        return [row for row in unique if row["request_id"] in new_ids]

    async def _add_to_rollup(self, connection: AsyncConnection, rows: Sequence[Row]) -> None:
        totals: dict[tuple[Any, ...], _Totals] = {}
        for row in rows:
            key = (hour_of(row["created_at"]), row["team"], row["model"], row["upstream"])
            totals.setdefault(key, _Totals()).add(row, _ROLLUP_SUMS)
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
        await connection.execute(self._rollup_upsert, values)

    async def _add_to_spend(self, connection: AsyncConnection, rows: Sequence[Row]) -> None:
        """The budgets' rollup (see proxy/ledger/spend.py)."""
        totals: dict[SpendKey, _Totals] = {}
        for row in rows:
            key = spend_key(row["team"], row["key_id"], row["created_at"])
            totals.setdefault(key, _Totals()).add(row, ())
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
        await connection.execute(self._spend_upsert, values)

    def _adding_upsert(self, table: Table, key_columns: list[str], added: Sequence[str]) -> Any:
        """An insert that, for a key already there, adds the new values to the stored ones."""
        statement = self._insert(table)
        return statement.on_conflict_do_update(
            index_elements=key_columns,
            set_={column: table.c[column] + statement.excluded[column] for column in added},
        )

    async def _add_to_traces(self, connection: AsyncConnection, rows: Sequence[Row]) -> None:
        totals: dict[tuple[str, str], _Totals] = {}
        for row in rows:
            if row["trace_id"] is not None:
                total = totals.setdefault((row["team"], row["trace_id"]), _Totals())
                total.add(row, _TRACE_SUMS)
        if not totals:
            return
        values = [
            {
                "team": team,
                "trace_id": trace_id,
                "started_at": total.first_at,
                "last_call_at": total.last_at,
                "calls": total.calls,
                "unpriced_calls": total.unpriced_calls,
                "cost_usd": total.cost_usd,
                "input_tokens": total.sums["input_tokens"],
                "output_tokens": total.sums["output_tokens"],
            }
            for (team, trace_id), total in totals.items()
        ]
        await connection.execute(self._traces_upsert, values)

    def _trace_upsert(self) -> Any:
        """Adds to a trace's totals, and widens its first and last call times."""
        table: Table = TraceRow.__table__  # type: ignore[assignment]
        statement = self._insert(table)
        excluded = statement.excluded
        set_: dict[str, Any] = {
            column: table.c[column] + excluded[column] for column in (*_COUNTED, *_TRACE_SUMS)
        }
        set_["started_at"] = case(
            (excluded.started_at < table.c.started_at, excluded.started_at),
            else_=table.c.started_at,
        )
        set_["last_call_at"] = case(
            (excluded.last_call_at > table.c.last_call_at, excluded.last_call_at),
            else_=table.c.last_call_at,
        )
        return statement.on_conflict_do_update(index_elements=["team", "trace_id"], set_=set_)
