"""The ledger's first schema: usage records, rollups, traces, teams, keys and budgets.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The types as proxy/ledger/models.py had them at this revision; a migration never imports the
# models, which move on after it.
# Money is exact on both engines: NUMERIC on Postgres, integer 1e-10 USD units on SQLite.
Money = sa.Numeric(precision=20, scale=10).with_variant(sa.BigInteger(), "sqlite")
Document = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UtcDateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("end_user", sa.String(256), nullable=True),
        sa.Column("tags", Document, nullable=False),
        sa.Column("trace_id", sa.String(128), nullable=True),
        sa.Column("parent_id", sa.String(128), nullable=True),
        sa.Column("upstream", sa.String(128), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("audio_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("image_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("audio_output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("accepted_prediction_tokens", sa.BigInteger(), nullable=False),
        sa.Column("rejected_prediction_tokens", sa.BigInteger(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("image_size", sa.String(32), nullable=True),
        sa.Column("image_quality", sa.String(32), nullable=True),
        sa.Column("input_characters", sa.Integer(), nullable=False),
        sa.Column("audio_seconds", sa.Numeric(precision=14, scale=3), nullable=False),
        sa.Column("prompt_system_tokens", sa.BigInteger(), nullable=True),
        sa.Column("prompt_tools_tokens", sa.BigInteger(), nullable=True),
        sa.Column("prompt_history_tokens", sa.BigInteger(), nullable=True),
        sa.Column("prompt_latest_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cost_usd", Money, nullable=True),
        sa.Column("price_entry", sa.String(256), nullable=True),
        sa.Column("price_effective_from", UtcDateTime, nullable=True),
        sa.Column("estimated", sa.Boolean(), nullable=False),
        sa.Column("service_tier", sa.String(32), nullable=True),
        sa.Column("batch", sa.Boolean(), nullable=False),
        sa.Column("latency_seconds", sa.Float(), nullable=False),
        sa.Column("time_to_first_token_seconds", sa.Float(), nullable=True),
        sa.Column("overhead_seconds", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("request_id", name="pk_usage_records"),
    )
    op.create_index("ix_usage_records_created_at", "usage_records", ["created_at"])
    op.create_index("ix_usage_records_team_created_at", "usage_records", ["team", "created_at"])
    op.create_index("ix_usage_records_model_created_at", "usage_records", ["model", "created_at"])
    op.create_index(
        "ix_usage_records_end_user_created_at", "usage_records", ["end_user", "created_at"]
    )
    op.create_index("ix_usage_records_trace_id", "usage_records", ["trace_id"])

    op.create_table(
        "hourly_usage",
        sa.Column("hour", UtcDateTime, nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("upstream", sa.String(128), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("unpriced_calls", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column("audio_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("audio_output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("images", sa.BigInteger(), nullable=False),
        sa.Column("prompt_system_tokens", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tools_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", Money, nullable=False),
        sa.PrimaryKeyConstraint("hour", "team", "model", "upstream", name="pk_hourly_usage"),
    )
    op.create_index("ix_hourly_usage_team_hour", "hourly_usage", ["team", "hour"])

    op.create_table(
        "traces",
        sa.Column("trace_id", sa.String(128), nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("last_call_at", UtcDateTime, nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", Money, nullable=False),
        sa.Column("unpriced_calls", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("trace_id", name="pk_traces"),
    )
    op.create_index("ix_traces_team_last_call_at", "traces", ["team", "last_call_at"])

    op.create_table(
        "teams",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_teams"),
        sa.UniqueConstraint("name", name="uq_teams_name"),
    )

    op.create_table(
        "keys",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(128), nullable=False),
        sa.Column("models", Document, nullable=True),
        sa.Column("end_user", sa.String(256), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=True),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
        sa.Column("valid_until", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_keys"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_keys_team_id_teams", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("key_hash", name="uq_keys_key_hash"),
    )
    op.create_index("ix_keys_team_id", "keys", ["team_id"])

    op.create_table(
        "budgets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("limit_usd", Money, nullable=False),
        sa.Column("hard", sa.Boolean(), nullable=False),
        sa.Column("thresholds", Document, nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("window_start", UtcDateTime, nullable=True),
        sa.Column("window_end", UtcDateTime, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_budgets"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_budgets_team_id_teams", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["keys.id"], name="fk_budgets_key_id_keys", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("team_id", "key_id", name="uq_budgets_team_id_key_id"),
    )


def downgrade() -> None:
    # Dependants first; each table's indexes go with it.
    for table in ("budgets", "keys", "teams", "traces", "hourly_usage", "usage_records"):
        op.drop_table(table)
