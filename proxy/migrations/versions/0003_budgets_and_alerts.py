"""Budgets and alerts: the spend rollup, budget leases, alerts with their outbox, alert sinks,
and the version row replicas poll to reload teams, keys and budgets.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0001: the types as the models had them at this revision.
Money = sa.Numeric(precision=20, scale=10).with_variant(sa.BigInteger(), "sqlite")
Document = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UtcDateTime = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "access_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_access_version"),
    )
    op.create_table(
        "budget_spend",
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("bucket_start", UtcDateTime, nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("unpriced_calls", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", Money, nullable=False),
        sa.PrimaryKeyConstraint("team", "key_id", "bucket_start", name="pk_budget_spend"),
    )
    op.create_index("ix_budget_spend_team_bucket_start", "budget_spend", ["team", "bucket_start"])
    op.create_table(
        "budget_leases",
        sa.Column("budget_id", sa.Integer(), nullable=False),
        sa.Column("period_start", UtcDateTime, nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("amount_usd", Money, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("budget_id", "period_start", "holder", name="pk_budget_leases"),
        sa.ForeignKeyConstraint(
            ["budget_id"],
            ["budgets.id"],
            name="fk_budget_leases_budget_id_budgets",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("budget_id", sa.Integer(), nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("threshold", sa.Numeric(6, 4), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("period_start", UtcDateTime, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("payload", Document, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(
            ["budget_id"], ["budgets.id"], name="fk_alerts_budget_id_budgets", ondelete="CASCADE"
        ),
        sa.UniqueConstraint(
            "budget_id",
            "period_start",
            "kind",
            "threshold",
            name="uq_alerts_budget_id_period_start_kind_threshold",
        ),
    )
    op.create_index("ix_alerts_created_at", "alerts", ["created_at"])
    op.create_table(
        "alert_sinks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("secret", sa.String(256), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_sinks"),
        sa.UniqueConstraint("kind", "url", name="uq_alert_sinks_kind_url"),
    )
    op.create_table(
        "alert_deliveries",
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("sink_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime, nullable=False),
        sa.Column("claimed_until", UtcDateTime, nullable=True),
        sa.Column("delivered_at", UtcDateTime, nullable=True),
        sa.Column("last_error", sa.String(512), nullable=True),
        sa.PrimaryKeyConstraint("alert_id", "sink_id", name="pk_alert_deliveries"),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name="fk_alert_deliveries_alert_id_alerts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sink_id"],
            ["alert_sinks.id"],
            name="fk_alert_deliveries_sink_id_alert_sinks",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_alert_deliveries_status_next_attempt_at",
        "alert_deliveries",
        ["status", "next_attempt_at"],
    )


def downgrade() -> None:
    for table in (
        "alert_deliveries",
        "alert_sinks",
        "alerts",
        "budget_leases",
        "budget_spend",
        "access_version",
    ):
        op.drop_table(table)
