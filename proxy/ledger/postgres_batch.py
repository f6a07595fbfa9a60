"""The ledger's batch write on Postgres: one statement, the same for every batch size.

Through SQLAlchemy's executemany a batch cost 60 to 120 µs of CPU per row here (every row's
parameters processed in Python, a statement per table, a new prepared statement per batch size),
and that CPU is taken from the proxy's own core; arrays, one per column, still cost 30 µs a row
in the driver's encoder. Here the batch travels as one JSON document that Postgres turns into
`usage_records` rows itself (`json_populate_recordset`); the insert and the three rollups
(hourly usage, traces, budget spend) are data-modifying CTEs of a single statement, atomic on
its own and prepared once per connection. As in the portable path (`LedgerStore`), only the rows
the insert really added (`RETURNING`) reach the rollups, so replaying a batch never counts twice.
The journal's lines go in as they are: a batch is never decoded and encoded again in Python.
The rollups' keys are computed here in SQL, and must match `hour_of` and `spend_key`: the tests
run every ledger test on both engines.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import TextClause, text

from proxy.ledger.models import UsageRow
from proxy.ledger.spend import NO_KEY

_COLUMNS = ", ".join(column.name for column in UsageRow.__table__.columns)
_HOUR = "date_trunc('hour', created_at, 'UTC')"
# The quarter hour (`spend.bucket_of`): the UTC hour plus whole quarters of its minutes.
_BUCKET = (
    f"{_HOUR} + floor(date_part('minute', created_at AT TIME ZONE 'UTC') / 15)"
    " * interval '15 minutes'"
)
_COUNTS = "count(*), count(*) FILTER (WHERE cost_usd IS NULL), coalesce(sum(cost_usd), 0)"


def _sums(columns: Sequence[str]) -> str:
    return ", ".join(f"coalesce(sum({column}), 0)" for column in columns)


def _added(table: str, columns: Sequence[str]) -> str:
    return ", ".join(f"{column} = {table}.{column} + excluded.{column}" for column in columns)


def batch_statement(
    counted: Sequence[str], rollup_sums: Sequence[str], trace_sums: Sequence[str]
) -> TextClause:
    """The statement, for a `:rows` parameter from `batch_parameters`; its one row is the
    count of rows inserted. `counted` are the columns `_COUNTS` fills, in its order; the
    hourly rollup also sums `rollup_sums`, the traces `trace_sums` (see `LedgerStore`)."""
    rollup_added = (*counted, *rollup_sums)
    trace_added = (*counted, *trace_sums)
    return text(
        f"""
WITH incoming AS (
    SELECT DISTINCT ON (request_id) *
    FROM json_populate_recordset(NULL::usage_records, CAST(:rows AS JSON))
),
inserted AS (
    INSERT INTO usage_records ({_COLUMNS}) SELECT {_COLUMNS} FROM incoming
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id
),
added AS (SELECT incoming.* FROM incoming JOIN inserted USING (request_id)),
hourly AS (
    INSERT INTO hourly_usage (hour, team, model, upstream, {", ".join(rollup_added)})
    SELECT {_HOUR}, team, model, upstream, {_COUNTS}, {_sums(rollup_sums)}
    FROM added GROUP BY 1, 2, 3, 4
    ON CONFLICT (hour, team, model, upstream) DO UPDATE SET {_added("hourly_usage", rollup_added)}
),
spend AS (
    INSERT INTO budget_spend (team, key_id, bucket_start, {", ".join(counted)})
    SELECT team, coalesce(key_id, :no_key), {_BUCKET}, {_COUNTS}
    FROM added GROUP BY 1, 2, 3
    ON CONFLICT (team, key_id, bucket_start) DO UPDATE SET {_added("budget_spend", counted)}
),
trace_totals AS (
    INSERT INTO traces (team, trace_id, started_at, last_call_at, {", ".join(trace_added)})
    SELECT team, trace_id, min(created_at), max(created_at), {_COUNTS}, {_sums(trace_sums)}
    FROM added WHERE trace_id IS NOT NULL GROUP BY team, trace_id
    ON CONFLICT (team, trace_id) DO UPDATE SET {_added("traces", trace_added)},
        started_at = least(traces.started_at, excluded.started_at),
        last_call_at = greatest(traces.last_call_at, excluded.last_call_at)
)
SELECT count(*) FROM inserted
"""
    )


def batch_parameters(lines: Sequence[bytes]) -> dict[str, str]:
    """The batch as one JSON array of its journal lines, as they are (`rows.encode`)."""
    return {"rows": (b"[" + b",".join(lines) + b"]").decode(), "no_key": NO_KEY}
