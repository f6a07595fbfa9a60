"""Traces keyed by team and trace id: clients choose trace ids, and two teams sending the same
one now have a trace each.

Each old row (one per trace id, named for the team of its first call) becomes one row per team
with calls of that trace id in `usage_records`, summed from those calls. What the old row holds
beyond the calls still there (calls retention deleted, the oldest) stays with the row's own
team: its first call's. Downgrade sums a trace id's rows back into one row, named for the team
whose trace started first.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0001: the types as the models had them at this revision.
Money = sa.Numeric(precision=20, scale=10).with_variant(sa.BigInteger(), "sqlite")
UtcDateTime = sa.DateTime(timezone=True)

# The old rows are kept here while the new table is filled from them.
_EARLIER = "traces_before_0004"
_TOTALS = ("calls", "input_tokens", "output_tokens", "cost_usd", "unpriced_calls")
_COLUMNS = ", ".join(("team", "trace_id", "started_at", "last_call_at", *_TOTALS))

# Every team's part of every trace id, from the calls still in `usage_records`.
_PARTS = """parts AS (
    SELECT team, trace_id, min(created_at) AS started_at, max(created_at) AS last_call_at,
        count(*) AS calls, coalesce(sum(input_tokens), 0) AS input_tokens,
        coalesce(sum(output_tokens), 0) AS output_tokens, coalesce(sum(cost_usd), 0) AS cost_usd,
        sum(CASE WHEN cost_usd IS NULL THEN 1 ELSE 0 END) AS unpriced_calls
    FROM usage_records WHERE trace_id IS NOT NULL GROUP BY team, trace_id
)"""
# Per old row, the parts of the teams other than the row's own.
_OTHERS = f"""others AS (
    SELECT parts.trace_id, {", ".join(f"sum(parts.{total}) AS {total}" for total in _TOTALS)}
    FROM parts JOIN {_EARLIER} AS old
        ON old.trace_id = parts.trace_id AND old.team <> parts.team
    GROUP BY parts.trace_id
)"""
_SPLIT = f"""WITH {_PARTS}, {_OTHERS}
INSERT INTO traces ({_COLUMNS})
SELECT parts.team, parts.trace_id, parts.started_at, parts.last_call_at,
    {", ".join(f"parts.{total}" for total in _TOTALS)}
FROM parts LEFT JOIN {_EARLIER} AS old ON old.trace_id = parts.trace_id
WHERE old.trace_id IS NULL OR old.team <> parts.team
UNION ALL
SELECT old.team, old.trace_id,
    CASE WHEN others.trace_id IS NOT NULL AND own.trace_id IS NOT NULL
        AND old.calls - others.calls = own.calls THEN own.started_at
        ELSE old.started_at END,
    CASE WHEN others.trace_id IS NULL THEN old.last_call_at
        ELSE coalesce(own.last_call_at, old.started_at) END,
    {", ".join(f"old.{total} - coalesce(others.{total}, 0)" for total in _TOTALS)}
FROM {_EARLIER} AS old
LEFT JOIN others ON others.trace_id = old.trace_id
LEFT JOIN parts AS own ON own.trace_id = old.trace_id AND own.team = old.team
WHERE old.calls > coalesce(others.calls, 0)
"""
_MERGE = f"""WITH ranked AS (
    SELECT *, row_number() OVER (PARTITION BY trace_id ORDER BY started_at, team) AS place
    FROM {_EARLIER}
)
INSERT INTO traces ({_COLUMNS})
SELECT max(CASE WHEN place = 1 THEN team END), trace_id, min(started_at), max(last_call_at),
    {", ".join(f"sum({total})" for total in _TOTALS)}
FROM ranked GROUP BY trace_id
"""


def upgrade() -> None:
    _rebuild_traces(primary_key=("team", "trace_id"), fill=_SPLIT)


def downgrade() -> None:
    _rebuild_traces(primary_key=("trace_id",), fill=_MERGE)


def _rebuild_traces(primary_key: tuple[str, ...], fill: str) -> None:
    """The traces table anew with this primary key, filled by `fill` from the rows it had."""
    op.execute(f"CREATE TABLE {_EARLIER} AS SELECT * FROM traces")
    op.drop_table("traces")
    names = (*primary_key, *(name for name in ("trace_id", "team") if name not in primary_key))
    op.create_table(
        "traces",
        *(sa.Column(name, sa.String(128), nullable=False) for name in names),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("last_call_at", UtcDateTime, nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", Money, nullable=False),
        sa.Column("unpriced_calls", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*primary_key, name="pk_traces"),
    )
    op.create_index("ix_traces_team_last_call_at", "traces", ["team", "last_call_at"])
    op.execute(fill)
    op.drop_table(_EARLIER)
